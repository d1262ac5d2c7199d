package safetensors

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// pattern returns n bytes that differ per tensor and per position.
func pattern(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seed*31 + i*7 + i>>8)
	}
	return b
}

func testTensors() []Tensor {
	return []Tensor{
		{Name: "embed.weight", DType: BF16, Shape: []int{10, 6}, Data: pattern(1, 120)},
		{Name: "layers.0.w", DType: F32, Shape: []int{6, 6}, Data: pattern(2, 144)},
		{Name: "layers.0.b", DType: F16, Shape: []int{6}, Data: pattern(3, 12)},
		{Name: "scalar", DType: I64, Shape: nil, Data: pattern(4, 8)},
		{Name: "empty", DType: F32, Shape: []int{0}, Data: nil},
		{Name: "layers.1.w", DType: F32, Shape: []int{6, 6}, Data: pattern(5, 144)},
	}
}

func checkSame(t *testing.T, src interface {
	Names() []string
	Tensor(string) (Tensor, error)
}, want []Tensor) {
	t.Helper()
	if got := len(src.Names()); got != len(want) {
		t.Errorf("%d tensors, want %d", got, len(want))
	}
	for _, w := range want {
		got, err := src.Tensor(w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got.DType != w.DType || len(got.Shape) != len(w.Shape) || !bytes.Equal(got.Data, w.Data) {
			t.Errorf("%s: got %s %v (%d bytes), want %s %v (%d bytes)", w.Name, got.DType, got.Shape, len(got.Data), w.DType, w.Shape, len(w.Data))
		}
		if len(w.Shape) > 0 && !reflect.DeepEqual(got.Shape, w.Shape) {
			t.Errorf("%s: shape %v, want %v", w.Name, got.Shape, w.Shape)
		}
	}
}

func TestWriteRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	want := testTensors()
	if err := Write(path, want, map[string]string{"format": "pt", "note": "x"}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if hl := int(raw[0]) | int(raw[1])<<8; (8+hl)%8 != 0 {
		t.Errorf("data section starts at %d, not 8-byte aligned", 8+hl)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checkSame(t, f, want)
	if !reflect.DeepEqual(f.Metadata(), map[string]string{"format": "pt", "note": "x"}) {
		t.Errorf("metadata %v", f.Metadata())
	}
}

func fillFrom(tensors []Tensor) FillFunc {
	byName := map[string][]byte{}
	for _, t := range tensors {
		byName[t.Name] = t.Data
	}
	// Write in two halves from two goroutines, back half first, to
	// exercise WriteAt's independence from order.
	return func(_ context.Context, s Spec, dst *Sink) error {
		data := byName[s.Name]
		mid := len(data) / 2
		var wg sync.WaitGroup
		errs := make([]error, 2)
		wg.Go(func() { _, errs[0] = dst.WriteAt(data[mid:], int64(mid)) })
		wg.Go(func() { _, errs[1] = dst.WriteAt(data[:mid], 0) })
		wg.Wait()
		return errors.Join(errs...)
	}
}

func TestWriteDir(t *testing.T) {
	want := testTensors()
	specs := make([]Spec, len(want))
	for i, w := range want {
		specs[i] = Spec{w.Name, w.DType, w.Shape}
	}
	tests := []struct {
		name     string
		maxShard int64
		files    []string
	}{
		{"single", 0, []string{SingleFile}},
		{"fits in one shard", 1 << 20, []string{SingleFile}},
		// 120 | 144 | 12+8+0 | 144 bytes
		{"sharded", 150, []string{"model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors", "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors", IndexFile}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := WriteDir(context.Background(), dir, specs, WriteOptions{MaxShardSize: tt.maxShard}, fillFrom(want)); err != nil {
				t.Fatal(err)
			}
			var files []string
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				files = append(files, e.Name())
			}
			if !reflect.DeepEqual(files, tt.files) {
				t.Fatalf("files %v, want %v", files, tt.files)
			}
			s, err := OpenDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			checkSame(t, s, want)
			if s.Metadata()["format"] != "pt" {
				t.Errorf("default metadata missing: %v", s.Metadata())
			}
			if w := s.Where("layers.1.w"); !strings.HasPrefix(w, dir) || !strings.HasSuffix(w, ".safetensors") {
				t.Errorf("Where = %q", w)
			}
			if tt.maxShard == 150 {
				var idx struct {
					Metadata  map[string]int64
					WeightMap map[string]string `json:"weight_map"`
				}
				raw, _ := os.ReadFile(filepath.Join(dir, IndexFile))
				if err := json.Unmarshal(raw, &idx); err != nil {
					t.Fatal(err)
				}
				if idx.Metadata["total_size"] != 428 || len(idx.WeightMap) != len(want) {
					t.Errorf("index %s", raw)
				}
			}
		})
	}
}

func TestWriterIncomplete(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	w, err := Create(path, []Spec{{"a", F32, []int{4}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := w.Tensor("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(make([]byte, 9)); err == nil || !strings.Contains(err.Error(), "overruns") {
		t.Errorf("overrun: %v", err)
	}
	if _, err := w.Tensor("b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("undeclared tensor: %v", err)
	}
	err = w.Close()
	if err == nil || !strings.Contains(err.Error(), `tensor "a" received 8 of 16 bytes`) {
		t.Errorf("Close: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left files behind: %v", entries)
	}
}

func TestCreateBadSpecs(t *testing.T) {
	tests := []struct {
		name  string
		specs []Spec
	}{
		{"unknown dtype", []Spec{{"a", "F7", []int{1}}}},
		{"negative dim", []Spec{{"a", F32, []int{-1}}}},
		{"overflow", []Spec{{"a", F32, []int{1 << 40, 1 << 40}}}},
		{"duplicate", []Spec{{"a", F32, []int{1}}, {"a", F32, []int{1}}}},
		{"reserved", []Spec{{metadataKey, F32, []int{1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Create(filepath.Join(dir, "x.safetensors"), tt.specs, nil); err == nil || !strings.Contains(err.Error(), "x.safetensors") {
				t.Errorf("got %v, want an error naming the file", err)
			}
		})
	}
}

func TestWriteDirFillError(t *testing.T) {
	dir := t.TempDir()
	boom := errors.New("boom")
	err := WriteDir(context.Background(), dir, []Spec{{"a", U8, []int{1}}}, WriteOptions{}, func(context.Context, Spec, *Sink) error { return boom })
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), `tensor "a"`) {
		t.Errorf("got %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left files behind: %v", entries)
	}
}

func TestOpenDirErrors(t *testing.T) {
	shard := func(dir, name string, tensors ...string) {
		var ts []Tensor
		for _, n := range tensors {
			ts = append(ts, Tensor{Name: n, DType: U8, Shape: []int{1}, Data: []byte{1}})
		}
		if err := Write(filepath.Join(dir, name), ts, nil); err != nil {
			t.Fatal(err)
		}
	}
	index := func(dir string, m map[string]string) {
		b, _ := json.Marshal(map[string]any{"weight_map": m})
		if err := os.WriteFile(filepath.Join(dir, IndexFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		setup func(dir string)
		want  []string
	}{
		{"empty dir", func(string) {}, []string{"no model.safetensors or " + IndexFile}},
		{"missing shard", func(d string) {
			shard(d, "s1.safetensors", "a")
			index(d, map[string]string{"a": "s1.safetensors", "b": "s2.safetensors"})
		}, []string{IndexFile, "s2.safetensors", "no such file"}},
		{"tensor missing from shard", func(d string) {
			shard(d, "s1.safetensors", "a")
			index(d, map[string]string{"a": "s1.safetensors", "b": "s1.safetensors"})
		}, []string{IndexFile, `"b"`, "s1.safetensors", "does not contain it"}},
		{"shard outside dir", func(d string) {
			index(d, map[string]string{"a": "../x.safetensors"})
		}, []string{IndexFile, "not a file name"}},
		{"garbage index", func(d string) {
			_ = os.WriteFile(filepath.Join(d, IndexFile), []byte("{"), 0o644)
		}, []string{IndexFile}},
		{"empty weight map", func(d string) { index(d, nil) }, []string{"weight_map"}},
		{"bad shard", func(d string) {
			_ = os.WriteFile(filepath.Join(d, "s1.safetensors"), []byte("xx"), 0o644)
			index(d, map[string]string{"a": "s1.safetensors"})
		}, []string{IndexFile, "s1.safetensors", "too short"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(dir)
			s, err := OpenDir(dir)
			if err == nil {
				s.Close()
				t.Fatal("OpenDir succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func BenchmarkWriteDir(b *testing.B) {
	const n = 64 << 20
	data := pattern(1, n)
	spec := []Spec{{"w", U8, []int{n}}}
	fill := func(_ context.Context, _ Spec, dst *Sink) error { _, err := dst.Write(data); return err }
	b.SetBytes(n)
	for i := 0; b.Loop(); i++ {
		dir := filepath.Join(b.TempDir(), fmt.Sprint(i))
		_ = os.Mkdir(dir, 0o755)
		if err := WriteDir(context.Background(), dir, spec, WriteOptions{}, fill); err != nil {
			b.Fatal(err)
		}
	}
}
