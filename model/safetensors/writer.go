package safetensors

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
)

// Spec declares a tensor to write.
type Spec struct {
	Name  string
	DType DType
	Shape []int
}

// Size is the tensor's data size in bytes, or -1 when the dtype is
// unknown, a dimension is negative or the size overflows.
func (s Spec) Size() int64 {
	n := int64(s.DType.Size())
	if n == 0 {
		return -1
	}
	for _, d := range s.Shape {
		if d < 0 || d != 0 && n > math.MaxInt64/int64(d) {
			return -1
		}
		n *= int64(d)
	}
	return n
}

// Writer writes one safetensors file whose header is fixed by Create and
// whose tensor data is supplied afterwards through Sinks, in any order.
// The file appears at its path only when Close succeeds.
type Writer struct {
	path  string
	f     *os.File
	sinks map[string]*Sink
	order []*Sink
}

// Sink receives one tensor's data.
type Sink struct {
	f       *os.File
	path    string
	name    string
	base    int64
	size    int64
	pos     int64
	written atomic.Int64
}

// Create starts a safetensors file at path holding specs, in that order,
// and metadata as its "__metadata__" (omitted when empty). Data goes to
// a temporary file beside path, renamed into place by Close.
func Create(path string, specs []Spec, metadata map[string]string) (*Writer, error) {
	header, offsets, err := encodeHeader(specs, metadata)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	w := &Writer{path: path, f: f, sinks: make(map[string]*Sink, len(specs))}
	dataStart := int64(len(header))
	total := dataStart + offsets[len(offsets)-1]
	if _, err := f.Write(header); err != nil {
		return nil, errors.Join(fmt.Errorf("%s: %w", path, err), w.Abort())
	}
	if err := f.Truncate(total); err != nil {
		return nil, errors.Join(fmt.Errorf("%s: %w", path, err), w.Abort())
	}
	for i, s := range specs {
		sk := &Sink{f: f, path: path, name: s.Name, base: dataStart + offsets[i], size: offsets[i+1] - offsets[i]}
		w.sinks[s.Name] = sk
		w.order = append(w.order, sk)
	}
	return w, nil
}

// encodeHeader returns the length-prefixed header, padded with spaces to
// a multiple of 8 bytes so the data section is aligned, and the data
// offsets of specs (len(specs)+1 values).
func encodeHeader(specs []Spec, metadata map[string]string) ([]byte, []int64, error) {
	var b bytes.Buffer
	b.WriteString("{")
	if len(metadata) > 0 {
		m, err := json.Marshal(metadata)
		if err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(&b, "%q:%s", metadataKey, m)
	}
	offsets := []int64{0}
	seen := map[string]bool{}
	for _, s := range specs {
		size := s.Size()
		switch {
		case s.Name == metadataKey || seen[s.Name]:
			return nil, nil, fmt.Errorf("tensor name %q is reserved or repeated", s.Name)
		case size < 0:
			return nil, nil, fmt.Errorf("tensor %q: bad dtype %q or shape %v", s.Name, s.DType, s.Shape)
		}
		seen[s.Name] = true
		begin := offsets[len(offsets)-1]
		if b.Len() > 1 {
			b.WriteString(",")
		}
		name, _ := json.Marshal(s.Name)
		shape, _ := json.Marshal(s.Shape)
		if s.Shape == nil {
			shape = []byte("[]")
		}
		fmt.Fprintf(&b, `%s:{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]}`, name, s.DType, shape, begin, begin+size)
		offsets = append(offsets, begin+size)
	}
	b.WriteString("}")
	for b.Len()%8 != 0 {
		b.WriteString(" ")
	}
	out := make([]byte, 8, 8+b.Len())
	binary.LittleEndian.PutUint64(out, uint64(b.Len()))
	return append(out, b.Bytes()...), offsets, nil
}

// Tensor returns the Sink of a declared tensor.
func (w *Writer) Tensor(name string) (*Sink, error) {
	s, ok := w.sinks[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w: %q was not declared", w.path, ErrNotFound, name)
	}
	return s, nil
}

// Close checks that every tensor received exactly its data, then syncs
// the file and renames it into place. On error the file is removed.
func (w *Writer) Close() error {
	for _, s := range w.order {
		if n := s.written.Load(); n != s.size {
			return errors.Join(fmt.Errorf("%s: tensor %q received %d of %d bytes", w.path, s.name, n, s.size), w.Abort())
		}
	}
	if err := w.f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("%s: %w", w.path, err), w.Abort())
	}
	if err := w.f.Close(); err != nil {
		return errors.Join(fmt.Errorf("%s: %w", w.path, err), w.Abort())
	}
	if err := os.Rename(w.f.Name(), w.path); err != nil {
		_ = os.Remove(w.f.Name())
		return err
	}
	return nil
}

// Abort discards the file. It is safe to call after a failed Close.
func (w *Writer) Abort() error {
	_ = w.f.Close()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Size is the tensor's data size in bytes.
func (s *Sink) Size() int64 { return s.size }

// Write appends p after the data already written by Write. It must not
// be called concurrently with itself.
func (s *Sink) Write(p []byte) (int, error) {
	n, err := s.WriteAt(p, s.pos)
	s.pos += int64(n)
	return n, err
}

// WriteAt writes p at offset off of the tensor's data. It is safe for
// concurrent use on disjoint ranges.
func (s *Sink) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > s.size || int64(len(p)) > s.size-off {
		return 0, fmt.Errorf("%s: tensor %q: write of %d bytes at %d overruns its %d bytes", s.path, s.name, len(p), off, s.size)
	}
	n, err := s.f.WriteAt(p, s.base+off)
	s.written.Add(int64(n))
	if err != nil {
		return n, fmt.Errorf("%s: tensor %q: %w", s.path, s.name, err)
	}
	return n, nil
}

// Write writes in-memory tensors to a safetensors file at path, in the
// order given; a convenience for small files.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	specs := make([]Spec, len(tensors))
	for i, t := range tensors {
		specs[i] = Spec{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	w, err := Create(path, specs, metadata)
	if err != nil {
		return err
	}
	for i, t := range tensors {
		if int64(len(t.Data)) != w.order[i].size {
			return errors.Join(fmt.Errorf("%s: tensor %q has %d bytes of data, its shape needs %d", path, t.Name, len(t.Data), w.order[i].size), w.Abort())
		}
		if _, err := w.order[i].Write(t.Data); err != nil {
			return errors.Join(err, w.Abort())
		}
	}
	return w.Close()
}

// FillFunc writes one tensor's data into dst. It may use dst.WriteAt
// from several goroutines.
type FillFunc func(ctx context.Context, spec Spec, dst *Sink) error

// WriteOptions tunes WriteDir.
type WriteOptions struct {
	// MaxShardSize, when positive, splits the data into files of at most
	// this many bytes (a larger tensor gets a file of its own) named as
	// transformers names them, model-00001-of-00003.safetensors, plus
	// model.safetensors.index.json. Zero (the default) or a model that
	// fits in one shard gives a single model.safetensors.
	MaxShardSize int64
	// Metadata is every file's "__metadata__". Nil means {"format": "pt"},
	// which transformers requires; pass an empty map to write none.
	Metadata map[string]string
}

// WriteDir writes specs into the existing directory dir, calling fill for
// each tensor in order. Each file appears only once complete, and the
// index, when there is one, is written last.
func WriteDir(ctx context.Context, dir string, specs []Spec, opts WriteOptions, fill FillFunc) error {
	meta := opts.Metadata
	if meta == nil {
		meta = map[string]string{"format": "pt"}
	}
	shards := splitShards(specs, opts.MaxShardSize)
	weightMap := map[string]string{}
	var total int64
	for i, shard := range shards {
		name := SingleFile
		if len(shards) > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		}
		if err := writeShard(ctx, filepath.Join(dir, name), shard, meta, fill); err != nil {
			return err
		}
		for _, s := range shard {
			weightMap[s.Name] = name
			total += s.Size()
		}
	}
	if len(shards) < 2 {
		return nil
	}
	idx, err := json.MarshalIndent(map[string]any{
		"metadata":   map[string]int64{"total_size": total},
		"weight_map": weightMap,
	}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, IndexFile), append(idx, '\n'))
}

func writeShard(ctx context.Context, path string, specs []Spec, meta map[string]string, fill FillFunc) error {
	w, err := Create(path, specs, meta)
	if err != nil {
		return err
	}
	for i, s := range specs {
		if err := ctx.Err(); err != nil {
			return errors.Join(err, w.Abort())
		}
		if err := fill(ctx, s, w.order[i]); err != nil {
			return errors.Join(fmt.Errorf("%s: tensor %q: %w", path, s.Name, err), w.Abort())
		}
	}
	return w.Close()
}

// splitShards groups specs greedily, in order, into runs of at most max
// data bytes; max <= 0 means one group.
func splitShards(specs []Spec, max int64) [][]Spec {
	if max <= 0 {
		return [][]Spec{specs}
	}
	var out [][]Spec
	var cur []Spec
	var size int64
	for _, s := range specs {
		if len(cur) > 0 && size+s.Size() > max {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, s)
		size += s.Size()
	}
	return append(out, cur)
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it into place, so readers never see a partial file.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = io.Copy(f, bytes.NewReader(data))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
