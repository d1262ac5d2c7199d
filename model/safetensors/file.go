package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/tandemllm/tandem/internal/half"
)

// Tensor is one tensor of an open file. Data aliases the file's read-only
// mapping: it is valid until the File is closed and must not be written.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
}

// NumElements is the product of the shape (1 for a scalar).
func (t Tensor) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Float32s returns a copy of an F32, BF16 or F16 tensor as float32 values.
func (t Tensor) Float32s() ([]float32, error) {
	out := make([]float32, t.NumElements())
	switch t.DType {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
	case BF16:
		half.BF16ToFloat32s(out, t.Data)
	case F16:
		half.F16ToFloat32s(out, t.Data)
	default:
		return nil, fmt.Errorf("tensor %q: dtype %s cannot be read as float32", t.Name, t.DType)
	}
	return out, nil
}

// File is an open, memory-mapped safetensors file. Tensor, Names, Shape
// and Metadata are safe for concurrent use; Close must not race with them.
type File struct {
	path   string
	mm     []byte
	data   []byte
	hdr    *Header
	byName map[string]int
	names  []string
}

// Open maps the file at path read-only and validates its header.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < 8 {
		return nil, fmt.Errorf("%s: %w: file is %d bytes, too short for the 8-byte header length", path, ErrInvalid, size)
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("%s: %w: file of %d bytes cannot be mapped", path, ErrInvalid, size)
	}
	mm, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	file, err := newFile(path, mm)
	if err != nil {
		_ = unix.Munmap(mm)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return file, nil
}

// newFile parses a whole file's bytes; Open and the fuzz tests share it.
func newFile(path string, buf []byte) (*File, error) {
	n := binary.LittleEndian.Uint64(buf)
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("%w: header length %d exceeds the %d-byte limit", ErrInvalid, n, MaxHeaderSize)
	}
	if n > uint64(len(buf)-8) {
		return nil, fmt.Errorf("%w: header length %d exceeds the %d bytes after the length field", ErrInvalid, n, len(buf)-8)
	}
	data := buf[8+n:]
	hdr, err := ParseHeader(buf[8:8+n], int64(len(data)))
	if err != nil {
		return nil, err
	}
	f := &File{path: path, mm: buf, data: data, hdr: hdr, byName: make(map[string]int, len(hdr.Tensors))}
	for i, t := range hdr.Tensors {
		f.byName[t.Name] = i
		f.names = append(f.names, t.Name)
	}
	sort.Strings(f.names)
	return f, nil
}

// Path is the file's path as given to Open.
func (f *File) Path() string { return f.path }

// Names lists the tensor names, sorted.
func (f *File) Names() []string { return slices.Clone(f.names) }

// Metadata is the header's "__metadata__" map (nil when absent). The
// caller must not modify it.
func (f *File) Metadata() map[string]string { return f.hdr.Metadata }

// Info returns a tensor's header entry without touching its data.
func (f *File) Info(name string) (TensorInfo, error) {
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, fmt.Errorf("%s: %w: %q", f.path, ErrNotFound, name)
	}
	t := f.hdr.Tensors[i]
	t.Shape = slices.Clone(t.Shape)
	return t, nil
}

// Shape returns a tensor's shape and whether the tensor exists.
func (f *File) Shape(name string) ([]int, bool) {
	t, err := f.Info(name)
	return t.Shape, err == nil
}

// Where names the file holding a tensor, for error messages.
func (f *File) Where(string) string { return f.path }

// Tensor returns the named tensor; its Data aliases the mapping.
func (f *File) Tensor(name string) (Tensor, error) {
	if f.mm == nil {
		return Tensor{}, fmt.Errorf("%s: %w", f.path, ErrClosed)
	}
	t, err := f.Info(name)
	if err != nil {
		return Tensor{}, err
	}
	return Tensor{Name: name, DType: t.DType, Shape: t.Shape, Data: f.data[t.Begin:t.End:t.End]}, nil
}

// Close unmaps the file; tensors obtained from it become invalid.
// Closing twice is harmless.
func (f *File) Close() error {
	if f.mm == nil {
		return nil
	}
	mm := f.mm
	f.mm, f.data = nil, nil
	if err := unix.Munmap(mm); err != nil {
		return fmt.Errorf("%s: munmap: %w", f.path, err)
	}
	return nil
}
