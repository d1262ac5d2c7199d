package engine

import (
	"context"
	"testing"

	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/model/preset"
)

// testPresets cover both architectures and grouped-query attention.
var testPresets = []string{"tiny", "gqa-tiny", "gpt2-124m"}

// testModel loads a preset (made once in the shared cache directory) on a
// fresh CPU backend with the given kernel set.
func testModel(tb testing.TB, name, dtype, kernels string) *Model {
	tb.Helper()
	dt, err := preset.ParseDType(dtype)
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := preset.Ensure(context.Background(), name, preset.DefaultCacheDir(), preset.Options{DType: dt})
	if err != nil {
		tb.Fatal(err)
	}
	be, err := cpu.New(cpu.Options{Kernels: kernels})
	if err != nil {
		tb.Fatal(err)
	}
	m, err := Open(dir, be, Shard{})
	if err != nil {
		be.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		m.Close()
		be.Close()
	})
	return m
}
