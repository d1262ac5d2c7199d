package safetensors

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestOpenFixture(t *testing.T) {
	f, err := Open(filepath.Join("testdata", "small.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, want := f.Names(), []string{"a.weight", "b.bf16", "c.f16", "d.i64", "e.empty"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	if got := f.Metadata()["format"]; got != "pt" {
		t.Errorf("metadata format = %q, want pt", got)
	}
	tests := []struct {
		name  string
		dtype DType
		shape []int
		want  []float32
	}{
		{"a.weight", F32, []int{2, 3}, []float32{1, -2, 3.5, 0.25, 1e-3, -7}},
		{"b.bf16", BF16, []int{4}, []float32{1, -2, float32(math.Inf(1)), math.Float32frombits(0x00010000)}},
		{"c.f16", F16, []int{2}, []float32{1, -65504}},
		{"e.empty", F32, []int{0, 5}, []float32{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, err := f.Tensor(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if ts.DType != tt.dtype || !reflect.DeepEqual(ts.Shape, tt.shape) {
				t.Fatalf("got %s %v, want %s %v", ts.DType, ts.Shape, tt.dtype, tt.shape)
			}
			got, err := ts.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("values %v, want %v", got, tt.want)
			}
		})
	}
	scalar, err := f.Tensor("d.i64")
	if err != nil {
		t.Fatal(err)
	}
	if len(scalar.Shape) != 0 || int64(binary.LittleEndian.Uint64(scalar.Data)) != -42 {
		t.Errorf("scalar: shape %v data %v", scalar.Shape, scalar.Data)
	}
	if _, err := scalar.Float32s(); err == nil {
		t.Error("Float32s of an I64 tensor succeeded")
	}
	if _, err := f.Tensor("nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "small.safetensors") {
		t.Errorf("missing tensor: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Tensor("a.weight"); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// rawFile assembles a file from a header and a data section.
func rawFile(header string, data int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, data)...)
}

func TestOpenBadFiles(t *testing.T) {
	lying := binary.LittleEndian.AppendUint64(nil, 1000)
	lying = append(lying, `{}`...)
	huge := binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1)
	huge = append(huge, `{}`...)
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"truncated length", []byte{1, 0, 0}, "too short"},
		{"header longer than file", lying, "header length 1000 exceeds"},
		{"header over cap", huge, "exceeds the 104857600-byte limit"},
		{"garbage json", rawFile(`{"a": [}`, 0), "a"},
		{"not an object", rawFile(`[1,2]`, 0), "not a JSON object"},
		{"trailing garbage", rawFile(`{} x`, 0), "trailing data"},
		{"invalid utf8", rawFile("{\"\xff\":1}", 0), "UTF-8"},
		{"unknown dtype", rawFile(`{"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}`, 4), `unknown or unsupported dtype "F12"`},
		{"sub-byte dtype", rawFile(`{"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}`, 1), `unsupported dtype "F4"`},
		{"missing shape", rawFile(`{"w":{"dtype":"F32","data_offsets":[0,4]}}`, 4), "required"},
		{"negative dim", rawFile(`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), "negative"},
		{"fractional dim", rawFile(`{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, 4), `tensor "w"`},
		{"huge shape product", rawFile(`{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, 4), "too large"},
		{"wrong size", rawFile(`{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}`, 20), "needs 24"},
		{"offsets past data", rawFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4), "outside the 4-byte data section"},
		{"reversed offsets", rawFile(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, 4), "outside"},
		{"three offsets", rawFile(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}`, 2), "has 3 values"},
		{"overlap", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 6), "overlaps"},
		{"gap", rawFile(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}`, 6), "gap"},
		{"trailing data bytes", rawFile(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 3), "cover 2 bytes but the data section has 3"},
		{"duplicate name", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), "appears twice"},
		{"bad metadata", rawFile(`{"__metadata__":{"n":1}}`, 0), "__metadata__"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".safetensors")
			if err := os.WriteFile(path, tt.file, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err == nil {
				f.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q does not wrap ErrInvalid", err)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q should name %s and contain %q", msg, path, tt.want)
			}
		})
	}
}

func TestOpenMissingFile(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "none.safetensors"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want a not-exist error", err)
	}
}
