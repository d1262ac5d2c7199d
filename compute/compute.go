package compute

import (
	"errors"
	"fmt"
)

// DType is the element type of a weight matrix held by a backend.
type DType uint8

// Element types of weight matrices and of the KV cache. Activations are
// always float32.
const (
	F32 DType = iota
	BF16
	F16
)

func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case BF16:
		return "BF16"
	case F16:
		return "F16"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Size is the number of bytes of one element.
func (d DType) Size() int {
	if d == F32 {
		return 4
	}
	return 2
}

// ErrUnsupported is returned when a backend cannot hold a dtype or run an op.
var ErrUnsupported = errors.New("compute: unsupported")

// Mat is a weight matrix of Rows×Cols elements, row-major, in backend memory.
// The layout is Hugging Face's Linear layout [out_features, in_features]:
// MatMul computes Rows outputs from Cols inputs.
type Mat interface {
	Rows() int
	Cols() int
	DType() DType
}

// Buf is a float32 activation buffer in backend memory. Ops address a
// buffer as m rows of n values, packed.
type Buf interface {
	Len() int
}

// KVCache is paged key/value storage for every layer: NumBlocks blocks of
// BlockSize token slots, each slot holding KVHeads×HeadDim keys and values
// of DType. Slot s lives in block s/BlockSize at offset s%BlockSize.
type KVCache interface {
	Layers() int
	NumBlocks() int
	BlockSize() int
	KVHeads() int
	HeadDim() int
	DType() DType
}

// KVSpec sizes a KVCache.
type KVSpec struct {
	Layers, NumBlocks, BlockSize, KVHeads, HeadDim int
	// DType is the element type of the stored keys and values: F32 (the
	// zero value), BF16 or F16, which halve the cache and what attention
	// reads (keys and values are rounded to nearest-even when written and
	// widened exactly when read; scores and sums stay float32). A backend
	// refuses one it does not keep with ErrUnsupported (CUDA: F16).
	DType DType
}

// Bytes is the size of one slot's keys and values of one layer, in bytes.
func (s KVSpec) Bytes() int { return 2 * s.KVHeads * s.HeadDim * s.DType.Size() }

// AttnSeq describes one sequence's rows in a batched attention call.
// Query rows [QRow, QRow+QLen) belong to positions [Pos, Pos+QLen); each
// attends causally to the sequence's cached positions 0..its own position,
// found through Blocks (block ids, in order). The keys and values of the
// query rows must already be written to the cache.
type AttnSeq struct {
	QRow, QLen int
	Pos        int
	Blocks     []int32
}

// AttnSpec gives the head geometry of an attention call.
type AttnSpec struct {
	Heads, KVHeads, HeadDim int
	// Scale multiplies q·k before the softmax (usually 1/sqrt(HeadDim)).
	Scale float32
}

// Backend runs the kernels of a forward pass. Ops are issued in order and
// may run asynchronously; Read waits for every op issued before it.
// A backend is used by one goroutine at a time.
//
// Unless stated otherwise, m is a row count and every buffer argument is
// m packed rows of the width implied by the op; dst may not alias a source
// except where an op says so.
type Backend interface {
	Name() string
	Close() error

	// LoadMat makes a weight matrix from little-endian host data of the
	// given dtype. The backend may keep a reference to data (e.g. an mmap)
	// instead of copying it; the caller keeps data alive and unchanged for
	// the life of the backend.
	LoadMat(dtype DType, rows, cols int, data []byte) (Mat, error)
	// Alloc makes a zeroed buffer of n float32 values.
	Alloc(n int) Buf
	// View is the part [off, off+n) of b, sharing its memory.
	View(b Buf, off, n int) Buf
	// Write copies src into b at offset off.
	Write(b Buf, off int, src []float32)
	// Read copies b[off:off+len(dst)] into dst after all pending ops.
	Read(dst []float32, b Buf, off int)

	// MatMul: dst[m, w.Rows] = x[m, w.Cols] · wᵀ.
	MatMul(dst, x Buf, w Mat, m int)
	// Embed: dst[i] = row ids[i] of w (converted to float32).
	Embed(dst Buf, w Mat, ids []int32)
	// Gather: dst[i] = src[rows[i]] for rows of n values.
	Gather(dst, src Buf, rows []int32, n int)

	// AddBias: x[i] += bias for m rows of len(bias) values (in place).
	AddBias(x, bias Buf, m int)
	// Add: dst = a + b elementwise over n values; dst may alias a or b.
	Add(dst, a, b Buf, n int)
	// RMSNorm over m rows of n values: dst = x / rms(x) * w. dst may alias x.
	RMSNorm(dst, x, w Buf, m, n int, eps float32)
	// LayerNorm over m rows of n values: dst = (x-mean)/std * w + b. dst may alias x.
	LayerNorm(dst, x, w, b Buf, m, n int, eps float32)
	// RoPE rotates, in place, heads of headDim values in m rows of
	// heads×headDim, row i at position pos[i], with the rotate-half
	// (GPT-NeoX / Hugging Face Llama) pairing: element j pairs with
	// j+headDim/2 and uses frequency invFreq[j] (headDim/2 values).
	RoPE(x Buf, m, heads, headDim int, pos []int32, invFreq []float32)
	// SiLUMul: dst = silu(gate) * up over n values; dst may alias gate.
	SiLUMul(dst, gate, up Buf, n int)
	// GELU (tanh approximation, as GPT-2's gelu_new) over n values, in place.
	GELU(x Buf, n int)

	// AutoKVDType is the KV cache dtype that suits this backend for a model
	// whose weights are of the given dtype: what a KV cache dtype of
	// "auto" means.
	AutoKVDType(weights DType) DType
	// NewKVCache allocates paged KV storage of spec.DType.
	NewKVCache(spec KVSpec) (KVCache, error)
	// KVWrite stores m rows of keys and values (each KVHeads×HeadDim) of
	// one layer at the given slots.
	KVWrite(c KVCache, layer int, k, v Buf, slots []int32)
	// Attention computes, for each sequence, causal attention of its query
	// rows (q: rows of Heads×HeadDim) over its cached keys and values of one
	// layer, writing rows of Heads×HeadDim into dst. Query head h reads KV
	// head h/(Heads/KVHeads) (grouped-query attention).
	Attention(dst, q Buf, c KVCache, layer int, seqs []AttnSeq, spec AttnSpec)

	// KVRead copies the keys and values of one layer at slots, for the
	// cache's KV heads [headFrom, headTo), into host memory laid out
	// [2][len(slots)][headTo-headFrom][HeadDim] (keys, then values), as
	// little-endian elements of the cache's DType (len(dst) is that many
	// elements times DType.Size()). KVLoad is the reverse. Unlike the other ops they are
	// synchronous, see the effect of every op issued before them, and may
	// run on another goroutine while ops run, as long as no op still to
	// come writes those slots of that layer: KV transfer reads a prefill's
	// layers as soon as they are computed (while later layers run) and
	// loads a decode's blocks before its first step.
	KVRead(c KVCache, layer int, slots []int32, headFrom, headTo int, dst []byte)
	KVLoad(c KVCache, layer int, slots []int32, headFrom, headTo int, src []byte)
}
