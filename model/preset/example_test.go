package preset_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/preset"
)

func ExampleEnsure() {
	cache, err := os.MkdirTemp("", "presets")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(cache)
	dir, err := preset.Ensure(context.Background(), "gqa-tiny", cache, preset.Options{Seed: 1})
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(filepath.Base(dir), cfg.Heads, cfg.KVHeads)
	// Output: gqa-tiny-F32-seed1-v1 8 2
}
