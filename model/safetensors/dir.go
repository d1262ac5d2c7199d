package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
)

// Hugging Face's file names in a model directory.
const (
	SingleFile = "model.safetensors"
	IndexFile  = "model.safetensors.index.json"
)

// Set is a model's weights spread over one or more files, looked up by
// tensor name regardless of which shard holds them. Its read methods are
// safe for concurrent use; Close must not race with them.
type Set struct {
	dir   string
	files []*File
	where map[string]*File
	names []string
}

// index is the part of model.safetensors.index.json that locates tensors.
type index struct {
	WeightMap map[string]string `json:"weight_map"`
}

// OpenDir opens the weights of the model directory dir: the shards listed
// by model.safetensors.index.json when it exists, model.safetensors
// otherwise.
func OpenDir(dir string) (*Set, error) {
	idxPath := filepath.Join(dir, IndexFile)
	raw, err := os.ReadFile(idxPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f, err := Open(filepath.Join(dir, SingleFile))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: no %s or %s: %w", dir, SingleFile, IndexFile, err)
		}
		if err != nil {
			return nil, err
		}
		s := &Set{dir: dir, files: []*File{f}, where: map[string]*File{}, names: f.Names()}
		for _, n := range s.names {
			s.where[n] = f
		}
		return s, nil
	case err != nil:
		return nil, err
	}
	var idx index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", idxPath, ErrInvalid, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: %w: weight_map is missing or empty", idxPath, ErrInvalid)
	}
	return openShards(dir, idxPath, idx.WeightMap)
}

func openShards(dir, idxPath string, weightMap map[string]string) (*Set, error) {
	s := &Set{dir: dir, where: make(map[string]*File, len(weightMap))}
	shards := map[string]*File{}
	for _, shard := range sortedValues(weightMap) {
		if shard == "" || filepath.Base(shard) != shard || shard == "." || shard == ".." {
			_ = s.Close()
			return nil, fmt.Errorf("%s: %w: shard name %q is not a file name in the model directory", idxPath, ErrInvalid, shard)
		}
		f, err := Open(filepath.Join(dir, shard))
		if err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("%s names shard %s: %w", idxPath, shard, err)
		}
		shards[shard] = f
		s.files = append(s.files, f)
	}
	for name, shard := range weightMap {
		f := shards[shard]
		if _, ok := f.byName[name]; !ok {
			_ = s.Close()
			return nil, fmt.Errorf("%s: %w: tensor %q is listed in %s, which does not contain it", idxPath, ErrInvalid, name, f.Path())
		}
		s.where[name] = f
		s.names = append(s.names, name)
	}
	sort.Strings(s.names)
	return s, nil
}

// sortedValues returns the distinct values of m, sorted, so shards open
// in a stable order.
func sortedValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// Dir is the model directory.
func (s *Set) Dir() string { return s.dir }

// Files lists the paths of the open files.
func (s *Set) Files() []string {
	out := make([]string, len(s.files))
	for i, f := range s.files {
		out[i] = f.Path()
	}
	return out
}

// Names lists every tensor name, sorted.
func (s *Set) Names() []string { return slices.Clone(s.names) }

// Metadata is the first file's "__metadata__" map, nil when absent.
func (s *Set) Metadata() map[string]string {
	if len(s.files) == 0 {
		return nil
	}
	return s.files[0].Metadata()
}

// Info returns a tensor's header entry.
func (s *Set) Info(name string) (TensorInfo, error) {
	f, ok := s.where[name]
	if !ok {
		return TensorInfo{}, fmt.Errorf("%s: %w: %q", s.dir, ErrNotFound, name)
	}
	return f.Info(name)
}

// Shape returns a tensor's shape and whether the tensor exists.
func (s *Set) Shape(name string) ([]int, bool) {
	t, err := s.Info(name)
	return t.Shape, err == nil
}

// Where names the file holding a tensor (the directory when none does),
// for error messages.
func (s *Set) Where(name string) string {
	if f, ok := s.where[name]; ok {
		return f.Path()
	}
	return s.dir
}

// Tensor returns the named tensor; its Data aliases the mapping.
func (s *Set) Tensor(name string) (Tensor, error) {
	f, ok := s.where[name]
	if !ok {
		return Tensor{}, fmt.Errorf("%s: %w: %q", s.dir, ErrNotFound, name)
	}
	return f.Tensor(name)
}

// Close unmaps every file.
func (s *Set) Close() error {
	var errs []error
	for _, f := range s.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
