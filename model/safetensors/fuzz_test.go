package safetensors

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseHeader feeds arbitrary header JSON and data sizes through the
// whole-file parser: it must never panic, and whatever it accepts must
// describe tensors that lie inside the data and tile it.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte(`{}`), uint16(0))
	f.Add([]byte(`{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}`), uint16(24))
	f.Add([]byte(`{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}}`), uint16(4))
	f.Add([]byte(`{"a":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}`), uint16(8))
	if raw, err := os.ReadFile(filepath.Join("testdata", "small.safetensors")); err == nil {
		n := binary.LittleEndian.Uint64(raw)
		f.Add(raw[8:8+n], uint16(len(raw)-8-int(n)))
	}
	f.Fuzz(func(t *testing.T, header []byte, dataSize uint16) {
		buf := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
		buf = append(buf, header...)
		buf = append(buf, make([]byte, dataSize)...)
		file, err := newFile("fuzz.safetensors", buf)
		if err != nil {
			return
		}
		var pos int64
		for _, name := range file.Names() {
			ts, err := file.Tensor(name)
			if err != nil {
				t.Fatalf("listed tensor %q: %v", name, err)
			}
			spec := Spec{Name: name, DType: ts.DType, Shape: ts.Shape}
			if int64(len(ts.Data)) != spec.Size() {
				t.Fatalf("%q: %d bytes of data for %d", name, len(ts.Data), spec.Size())
			}
			pos += int64(len(ts.Data))
		}
		if pos != int64(dataSize) {
			t.Fatalf("tensors hold %d bytes of a %d-byte data section", pos, dataSize)
		}
	})
}
