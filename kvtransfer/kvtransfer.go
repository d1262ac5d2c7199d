package kvtransfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"strconv"
	"strings"

	"google.golang.org/grpc"

	"github.com/tandemllm/tandem/internal/half"
	"github.com/tandemllm/tandem/parallel"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

var (
	// ErrTransferFailed is wrapped by Push when it gives up on a transfer.
	ErrTransferFailed = errors.New("kvtransfer: transfer failed")
	// ErrIncomplete is wrapped by Await when it gives up waiting.
	ErrIncomplete = errors.New("kvtransfer: KV incomplete")
)

// Source is how a prefill rank reads its KV: it is called once per layer, in
// order, and must fill dst (2*Tokens*heads*HeadDim elements of the push's
// DType, little-endian) with keys then values of the given global head range
// (a subrange of what the rank holds), laid out [2][Tokens][heads][HeadDim].
type Source interface {
	ReadLayer(layer int, heads parallel.Range, dst []byte) error
}

const (
	// defaultChunkBytes is SendSpec.MaxChunkBytes's default.
	defaultChunkBytes = 1 << 20
	// maxChunkBytes caps SendSpec.MaxChunkBytes so that every chunk fits
	// maxMessageBytes with its framing.
	maxChunkBytes = 8 << 20
	// maxMessageBytes is the largest KVChunk a receiver accepts (gRPC's
	// default of 4 MiB would refuse chunks of 4 MiB).
	maxMessageBytes = maxChunkBytes + 64<<10

	// Flow-control windows: gRPC's 64 KiB default lets a loopback or LAN
	// stream send a few frames then wait a round trip for WINDOW_UPDATE.
	// 32 MiB per stream keeps several chunks in flight.
	streamWindow = 32 << 20
	connWindow   = 64 << 20
	// ioBufferSize is the transport's socket read and write buffer: 1 MiB
	// means one syscall per chunk rather than one per 32 KiB. (A small read
	// buffer, letting frames be read straight into gRPC's buffers, measured
	// slower: two syscalls per 16 KiB frame.)
	ioBufferSize = 1 << 20
)

// ServerOptions are the options a server serving a Receiver needs for fast
// transfers; pass them to grpc.NewServer (with any others). They raise the
// HTTP/2 flow-control windows (the receiver's windows are what limits a
// stream), the socket buffers and the largest message accepted (8 MiB of
// payload), and install a codec that decodes KVChunk into a reused buffer.
// That codec encodes and decodes every other message with the standard
// protobuf codec, so other services on the same server are unaffected; it is
// forced for the whole server because gRPC picks codecs per server, not per
// service. A Receiver on a server without these options still works.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(ioBufferSize),
		grpc.WriteBufferSize(ioBufferSize),
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.ForceServerCodecV2(newCodec()),
	}
}

// castagnoli is the CRC-32C table (hardware-accelerated on amd64 and arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ElemSize is the bytes of one element of a KV dtype, 0 for one this
// package does not carry.
func ElemSize(dt tandemv1.DataType) int {
	switch dt {
	case tandemv1.DataType_DATA_TYPE_FLOAT32:
		return 4
	case tandemv1.DataType_DATA_TYPE_BFLOAT16, tandemv1.DataType_DATA_TYPE_FLOAT16:
		return 2
	}
	return 0
}

// convert writes the little-endian elements of src (of dtype from) into dst
// as dtype to: a copy when the two agree, otherwise through float32, a
// 16-bit type widened exactly and float32 rounded to the nearest 16-bit
// value (ties to even). dst holds exactly the elements src does.
func convert(dst []byte, to tandemv1.DataType, src []byte, from tandemv1.DataType) {
	const f32, bf16 = tandemv1.DataType_DATA_TYPE_FLOAT32, tandemv1.DataType_DATA_TYPE_BFLOAT16
	switch {
	case to == from:
		copy(dst, src)
	case from == bf16 && to == f32: // the common pair, without a call an element
		for i := range len(dst) / 4 {
			binary.LittleEndian.PutUint32(dst[4*i:], uint32(binary.LittleEndian.Uint16(src[2*i:]))<<16)
		}
	case from == f32 && to == bf16:
		for i := range len(dst) / 2 {
			f := math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
			binary.LittleEndian.PutUint16(dst[2*i:], half.BF16FromFloat32(f))
		}
	default:
		get, put := elemGetter(from), elemPutter(to)
		for i := range len(src) / ElemSize(from) {
			put(dst, i, get(src, i))
		}
	}
}

// elemGetter reads element i of little-endian elements of dt as float32.
func elemGetter(dt tandemv1.DataType) func(b []byte, i int) float32 {
	switch dt {
	case tandemv1.DataType_DATA_TYPE_BFLOAT16:
		return func(b []byte, i int) float32 { return half.BF16ToFloat32(binary.LittleEndian.Uint16(b[2*i:])) }
	case tandemv1.DataType_DATA_TYPE_FLOAT16:
		return func(b []byte, i int) float32 { return half.F16ToFloat32(binary.LittleEndian.Uint16(b[2*i:])) }
	}
	return func(b []byte, i int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])) }
}

// elemPutter writes f as element i of little-endian elements of dt.
func elemPutter(dt tandemv1.DataType) func(b []byte, i int, f float32) {
	switch dt {
	case tandemv1.DataType_DATA_TYPE_BFLOAT16:
		return func(b []byte, i int, f float32) { binary.LittleEndian.PutUint16(b[2*i:], half.BF16FromFloat32(f)) }
	case tandemv1.DataType_DATA_TYPE_FLOAT16:
		return func(b []byte, i int, f float32) { binary.LittleEndian.PutUint16(b[2*i:], half.F16FromFloat32(f)) }
	}
	return func(b []byte, i int, f float32) { binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f)) }
}

// spans formats sorted ints as ranges: "0-3,7".
func spans(xs []int) string {
	var b strings.Builder
	for i := 0; i < len(xs); {
		j := i
		for j+1 < len(xs) && xs[j+1] == xs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(xs[i]))
		if j > i {
			fmt.Fprintf(&b, "-%d", xs[j])
		}
		i = j + 1
	}
	return b.String()
}
