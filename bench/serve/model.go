package serve

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/model/tokenizer"
)

// Model is what the load test knows of the target's model.
type Model struct {
	// ID names where the tokenizer came from (tokenizer_id in results).
	ID        string
	Tokenizer *tokenizer.Tokenizer
	// Config is the model's shape; nil when only a tokenizer.json was
	// given.
	Config *model.Config
}

// ResolveModel finds the tokenizer (and shape) of the served model from
// spec, as --tokenizer takes it: a preset name, a model directory or a
// tokenizer.json; an empty spec means the served model's name, which
// must then be a preset (Tandem names a preset's model after it).
func ResolveModel(spec, served string) (*Model, error) {
	return ResolveModelFlag("--tokenizer", spec, served)
}

// ResolveModelFlag is ResolveModel for a spec that flag gave (--preset,
// --model), which its errors name.
func ResolveModelFlag(flag, spec, served string) (*Model, error) {
	given := flag
	if spec == "" {
		spec, flag = served, "the served model"
	}
	if p, err := preset.Get(spec); err == nil {
		cfg, err := p.Config()
		if err != nil {
			return nil, err
		}
		tok, err := tokenizer.GPT2Tokenizer(cfg.VocabSize)
		if err != nil {
			return nil, fmt.Errorf("preset %s: %w", spec, err)
		}
		return &Model{ID: spec, Tokenizer: tok, Config: cfg}, nil
	}
	st, err := os.Stat(spec)
	switch {
	case err != nil && flag == "the served model":
		return nil, usage("%s: the target serves %q, which is not a preset: name its tokenizer.json or model directory", given, served)
	case err != nil:
		return nil, usage("%s %q: not a preset (%s), a model directory or a tokenizer.json", flag, spec, preset.Names())
	case st.IsDir():
		tok, err := tokenizer.Load(filepath.Join(spec, "tokenizer.json"))
		if err != nil {
			return nil, usage("%s %s: %v", flag, spec, err)
		}
		cfg, err := model.LoadConfig(filepath.Join(spec, "config.json"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, usage("%s %s: %v", flag, spec, err)
		}
		return &Model{ID: spec, Tokenizer: tok, Config: cfg}, nil
	}
	tok, err := tokenizer.Load(spec)
	if err != nil {
		return nil, usage("%s %s: %v", flag, spec, err)
	}
	return &Model{ID: spec, Tokenizer: tok}, nil
}
