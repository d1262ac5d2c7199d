package preset

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/safetensors"
)

// specShapes serves a config's own tensor list as TensorShapes, to check
// the presets without writing gigabytes.
type specShapes map[string][]int

func (s specShapes) Shape(n string) ([]int, bool) { v, ok := s[n]; return v, ok }
func (s specShapes) Where(string) string          { return "spec" }

func TestPresetConfigs(t *testing.T) {
	tests := []struct {
		name    string
		arch    model.Arch
		kv      int
		vocab   int
		params  int64 // 0: only bounds checked
		minP    int64
		maxP    int64
		dtype   safetensors.DType
		scaling bool
	}{
		{"tiny", model.Llama, 8, 50257, 0, 1e6, 1e7, safetensors.F32, false},
		{"gqa-tiny", model.Llama, 2, 50257, 0, 1e6, 1e7, safetensors.F32, false},
		{"gpt2-124m", model.GPT2, 12, 50257, 124_439_808, 0, 0, safetensors.F32, false},
		{"llama-160m", model.Llama, 8, 50257, 0, 150e6, 170e6, safetensors.F32, false},
		{"llama-1b", model.Llama, 8, 128256, 1_235_814_400, 0, 0, safetensors.BF16, true},
	}
	if got := len(All()); got != len(tests) {
		t.Errorf("%d presets, test covers %d", got, len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Get(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			c, err := p.Config()
			if err != nil {
				t.Fatal(err)
			}
			if c.Arch != tt.arch || c.KVHeads != tt.kv || c.VocabSize != tt.vocab || p.DefaultDType != tt.dtype {
				t.Errorf("arch %s kv %d vocab %d dtype %s", c.Arch, c.KVHeads, c.VocabSize, p.DefaultDType)
			}
			if (c.RopeScaling != nil) != tt.scaling || !c.TieEmbeddings || c.BOSTokenID != 50256 || len(c.EOSTokenIDs) != 1 || c.EOSTokenIDs[0] != 50256 {
				t.Errorf("scaling %+v tie %v bos %d eos %v", c.RopeScaling, c.TieEmbeddings, c.BOSTokenID, c.EOSTokenIDs)
			}
			got := p.Params()
			if tt.params != 0 && got != tt.params || tt.params == 0 && (got < tt.minP || got > tt.maxP) {
				t.Errorf("params %d", got)
			}
			shapes := specShapes{}
			for _, s := range c.Tensors() {
				shapes[s.Name] = s.Shape
			}
			if err := model.CheckTensors(c, shapes); err != nil {
				t.Error(err)
			}
			raw, err := p.ConfigJSON(safetensors.F16)
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]any
			if err := json.Unmarshal(raw, &fields); err != nil {
				t.Fatal(err)
			}
			if fields["torch_dtype"] != "float16" || fields["architectures"] == nil {
				t.Errorf("config.json: %s", raw)
			}
		})
	}
}

func TestLlama1BMatchesPublishedConfig(t *testing.T) {
	want, err := model.LoadConfig(filepath.Join("..", "testdata", "llama-3.2-1b.json"))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := Get("llama-1b")
	got, err := p.Config()
	if err != nil {
		t.Fatal(err)
	}
	// Only the token ids differ: the preset's tokenizer is GPT-2's.
	want.BOSTokenID, want.EOSTokenIDs = got.BOSTokenID, got.EOSTokenIDs
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) {
		t.Errorf("llama-1b config\n got %s\nwant %s", gj, wj)
	}
}

func TestBadNames(t *testing.T) {
	if _, err := Get("huge"); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "tiny") {
		t.Errorf("Get: %v", err)
	}
	if _, err := ParseDType("int4"); !errors.Is(err, ErrDType) {
		t.Errorf("ParseDType: %v", err)
	}
	for in, want := range map[string]safetensors.DType{"f32": safetensors.F32, "BF16": safetensors.BF16, "float16": safetensors.F16} {
		if got, err := ParseDType(in); err != nil || got != want {
			t.Errorf("ParseDType(%q) = %q, %v", in, got, err)
		}
	}
	if err := Write(context.Background(), "nope", filepath.Join(t.TempDir(), "m"), Options{}); !errors.Is(err, ErrUnknown) {
		t.Errorf("Write: %v", err)
	}
	if _, err := CachePath(t.TempDir(), "tiny", Options{DType: safetensors.I8}); !errors.Is(err, ErrDType) {
		t.Errorf("CachePath with I8: %v", err)
	}
}

// dirDigest hashes every file of dir by name and content.
func dirDigest(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][32]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(b)
	}
	return out
}

func TestWriteTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a model directory")
	}
	ctx := context.Background()
	root := t.TempDir()
	write := func(name string, opts Options) string {
		dir := filepath.Join(root, name)
		if err := Write(ctx, "tiny", dir, opts); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	a := write("a", Options{Seed: 7})
	b := write("b", Options{Seed: 7, Workers: 1})
	c := write("c", Options{Seed: 8})
	h := write("h", Options{Seed: 7, DType: safetensors.BF16, MaxShardSize: 4 << 20})

	da, db, dc := dirDigest(t, a), dirDigest(t, b), dirDigest(t, c)
	for _, f := range []string{"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"} {
		if _, ok := da[f]; !ok {
			t.Errorf("%s missing", f)
		}
	}
	if len(da) != 5 {
		t.Errorf("files %v", da)
	}
	if da["model.safetensors"] != db["model.safetensors"] {
		t.Error("same seed, different worker count: weights differ")
	}
	if da["model.safetensors"] == dc["model.safetensors"] {
		t.Error("different seeds gave identical weights")
	}
	// NoWeights: the same small files, byte for byte, and no weights.
	nw := dirDigest(t, write("nw", Options{Seed: 7, NoWeights: true}))
	if _, ok := nw["model.safetensors"]; len(nw) != 4 || ok {
		t.Errorf("NoWeights wrote %v; want the four side files only", nw)
	}
	for f, d := range nw {
		if d != da[f] {
			t.Errorf("NoWeights: %s differs from the full directory's", f)
		}
	}

	cfg, err := model.LoadConfig(filepath.Join(a, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{a, h} {
		set, err := safetensors.OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer set.Close()
		if err := model.CheckTensors(cfg, set); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(filepath.Join(h, safetensors.IndexFile)); err != nil {
		t.Errorf("sharded write has no index: %v", err)
	}
	checkValues(t, a, h)
	if err := Write(ctx, "tiny", a, Options{}); !errors.Is(err, ErrExists) {
		t.Errorf("overwrite: %v", err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 5 {
		t.Errorf("temporary directories left: %v", entries)
	}
}

// checkValues checks the weight statistics of an f32 directory and that
// its bf16 twin holds the same values rounded.
func checkValues(t *testing.T, f32Dir, bf16Dir string) {
	t.Helper()
	s32, err := safetensors.OpenDir(f32Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s32.Close()
	s16, err := safetensors.OpenDir(bf16Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s16.Close()
	tests := []struct {
		name      string
		mean, std float64
	}{
		{"model.embed_tokens.weight", 0, 0.02},
		{"model.layers.1.mlp.down_proj.weight", 0, 0.02},
		{"model.layers.0.input_layernorm.weight", 1, 0},
		{"model.norm.weight", 1, 0},
	}
	for _, tt := range tests {
		a, err := s32.Tensor(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		va, _ := a.Float32s()
		var sum, sq float64
		for _, v := range va {
			sum += float64(v)
		}
		mean := sum / float64(len(va))
		for _, v := range va {
			sq += (float64(v) - mean) * (float64(v) - mean)
		}
		std := math.Sqrt(sq / float64(len(va)))
		if math.Abs(mean-tt.mean) > 1e-3 || math.Abs(std-tt.std) > 1e-3 {
			t.Errorf("%s: mean %.5f std %.5f, want %g and %g", tt.name, mean, std, tt.mean, tt.std)
		}
		b, err := s16.Tensor(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		vb, _ := b.Float32s()
		for i := range va {
			if d := math.Abs(float64(va[i] - vb[i])); d > math.Abs(float64(va[i]))/128 {
				t.Fatalf("%s[%d]: f32 %v, bf16 %v", tt.name, i, va[i], vb[i])
			}
		}
	}
}

func TestEnsureConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("writes model directories")
	}
	cache := t.TempDir()
	var wg sync.WaitGroup
	dirs := make([]string, 3)
	errs := make([]error, 3)
	for i := range dirs {
		wg.Go(func() {
			dirs[i], errs[i] = Ensure(context.Background(), "gqa-tiny", cache, Options{Seed: 3, Workers: 1})
		})
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil || dirs[i] != dirs[0] {
			t.Fatalf("caller %d: %q, %v", i, dirs[i], errs[i])
		}
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 1 {
		t.Errorf("cache holds %v, want one directory", entries)
	}
	cfg, err := model.LoadConfig(filepath.Join(dirs[0], "config.json"))
	if err != nil || cfg.KVHeads != 2 {
		t.Fatalf("cached config: %v, %v", cfg, err)
	}
	again, err := Ensure(context.Background(), "gqa-tiny", cache, Options{Seed: 3})
	if err != nil || again != dirs[0] {
		t.Errorf("second Ensure: %q, %v", again, err)
	}
}

func TestWriteCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	root := t.TempDir()
	err := Write(ctx, "tiny", filepath.Join(root, "m"), Options{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("left behind %v", entries)
	}
}

func TestProgress(t *testing.T) {
	var buf bytes.Buffer
	g := &generator{name: "x", progress: &buf, total: 1000}
	for range 20 {
		g.advance(50)
	}
	if got := strings.Count(buf.String(), "\n"); got != 10 || !strings.Contains(buf.String(), "100%") {
		t.Errorf("progress output %q", buf.String())
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv("TANDEM_CACHE", "/tmp/tc")
	if d := DefaultCacheDir(); d != "/tmp/tc/models" {
		t.Errorf("got %q", d)
	}
}

func BenchmarkWriteLlama1B(b *testing.B) {
	if testing.Short() {
		b.Skip("writes 2.5 GB")
	}
	p, _ := Get("llama-1b")
	b.SetBytes(p.DataSize(""))
	for b.Loop() {
		dir := filepath.Join(b.TempDir(), "m")
		if err := Write(context.Background(), "llama-1b", dir, Options{Progress: os.Stderr}); err != nil {
			b.Fatal(err)
		}
		_ = os.RemoveAll(dir)
	}
}
