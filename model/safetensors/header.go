package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"unicode/utf8"
)

// MaxHeaderSize bounds the JSON header; larger claims are treated as a
// corrupt file rather than an allocation to attempt.
const MaxHeaderSize = 100 << 20

// Sentinel errors callers may branch on.
var (
	// ErrInvalid is wrapped by every error caused by a malformed file.
	ErrInvalid = errors.New("invalid safetensors file")
	// ErrNotFound is wrapped when a requested tensor does not exist.
	ErrNotFound = errors.New("tensor not found")
	// ErrClosed is returned by a File or Set used after Close.
	ErrClosed = errors.New("safetensors: file closed")
)

// metadataKey is the reserved header entry holding free-form metadata.
const metadataKey = "__metadata__"

// TensorInfo is one header entry.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int
	// Begin and End are byte offsets within the data section.
	Begin, End int64
}

// Header is a parsed and validated safetensors header.
type Header struct {
	// Tensors are in data order (by Begin).
	Tensors []TensorInfo
	// Metadata is the "__metadata__" map, nil when absent.
	Metadata map[string]string
}

// rawTensor uses pointers so a missing field is told apart from an empty one.
type rawTensor struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// ParseHeader parses the JSON header of a file whose data section is
// dataSize bytes long, and checks that every tensor has a known dtype, a
// shape whose size matches its data_offsets, and that the tensors tile
// the data section exactly (no gaps, overlaps or trailing bytes).
func ParseHeader(js []byte, dataSize int64) (*Header, error) {
	if !utf8.Valid(js) {
		return nil, fmt.Errorf("%w: header is not valid UTF-8", ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("%w: header is not a JSON object", ErrInvalid)
	}
	h := &Header{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: header JSON: %v", ErrInvalid, err)
		}
		name, _ := tok.(string) // object keys are always strings
		if seen[name] {
			return nil, fmt.Errorf("%w: tensor %q appears twice in the header", ErrInvalid, name)
		}
		seen[name] = true
		if name == metadataKey {
			if err := dec.Decode(&h.Metadata); err != nil {
				return nil, fmt.Errorf("%w: %s must map strings to strings: %v", ErrInvalid, metadataKey, err)
			}
			continue
		}
		var raw rawTensor
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrInvalid, name, err)
		}
		info, err := checkTensor(name, raw, dataSize)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, info)
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%w: header JSON: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the header JSON object", ErrInvalid)
	}
	if err := checkTiling(h.Tensors, dataSize); err != nil {
		return nil, err
	}
	return h, nil
}

func checkTensor(name string, raw rawTensor, dataSize int64) (TensorInfo, error) {
	bad := func(format string, args ...any) (TensorInfo, error) {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q: %s", ErrInvalid, name, fmt.Sprintf(format, args...))
	}
	if raw.DType == nil || raw.Shape == nil || raw.DataOffsets == nil {
		return bad("dtype, shape and data_offsets are all required")
	}
	dt := DType(*raw.DType)
	if dt.Size() == 0 {
		return bad("unknown or unsupported dtype %q", *raw.DType)
	}
	shape := make([]int, len(*raw.Shape))
	elems := int64(1)
	for i, d := range *raw.Shape {
		if d < 0 {
			return bad("shape %v has a negative dimension", *raw.Shape)
		}
		if d != 0 && elems > math.MaxInt64/int64(dt.Size())/d {
			return bad("shape %v is too large", *raw.Shape)
		}
		elems *= d
		shape[i] = int(d)
	}
	off := *raw.DataOffsets
	if len(off) != 2 {
		return bad("data_offsets has %d values, want 2", len(off))
	}
	begin, end := off[0], off[1]
	if begin < 0 || end < begin || end > dataSize {
		return bad("data_offsets [%d, %d] are outside the %d-byte data section", begin, end, dataSize)
	}
	if want := elems * int64(dt.Size()); end-begin != want {
		return bad("data_offsets [%d, %d] span %d bytes, but shape %v of %s needs %d", begin, end, end-begin, shape, dt, want)
	}
	return TensorInfo{Name: name, DType: dt, Shape: shape, Begin: begin, End: end}, nil
}

// checkTiling sorts ts by offset and requires them to cover [0, dataSize)
// exactly, as Hugging Face's reader does.
func checkTiling(ts []TensorInfo, dataSize int64) error {
	sort.Slice(ts, func(i, j int) bool {
		if ts[i].Begin != ts[j].Begin {
			return ts[i].Begin < ts[j].Begin
		}
		if ts[i].End != ts[j].End {
			return ts[i].End < ts[j].End
		}
		return ts[i].Name < ts[j].Name
	})
	var pos int64
	for i, t := range ts {
		switch {
		case t.Begin < pos:
			p := ts[i-1]
			return fmt.Errorf("%w: tensor %q (bytes %d..%d) overlaps tensor %q (bytes %d..%d)", ErrInvalid, t.Name, t.Begin, t.End, p.Name, p.Begin, p.End)
		case t.Begin > pos:
			return fmt.Errorf("%w: tensor %q starts at byte %d, leaving a gap after byte %d", ErrInvalid, t.Name, t.Begin, pos)
		}
		pos = t.End
	}
	if pos != dataSize {
		return fmt.Errorf("%w: tensors cover %d bytes but the data section has %d", ErrInvalid, pos, dataSize)
	}
	return nil
}
