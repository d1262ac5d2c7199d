package kvtransfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"strconv"
	"strings"
	"unsafe"

	"google.golang.org/grpc"

	"github.com/tandemllm/tandem/parallel"
)

var (
	// ErrTransferFailed is wrapped by Push when it gives up on a transfer.
	ErrTransferFailed = errors.New("kvtransfer: transfer failed")
	// ErrIncomplete is wrapped by Await when it gives up waiting.
	ErrIncomplete = errors.New("kvtransfer: KV incomplete")
)

// Source is how a prefill rank reads its KV: it is called once per layer, in
// order, and must fill dst (len 2*Tokens*heads*HeadDim) with keys then values
// of the given global head range (a subrange of what the rank holds), laid out
// [2][Tokens][heads][HeadDim].
type Source interface {
	ReadLayer(layer int, heads parallel.Range, dst []float32) error
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

// littleEndian reports whether float32s can be reinterpreted as wire bytes.
func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// floatBytes views f as bytes in memory order. On little-endian machines
// (every platform Tandem runs on) that is the wire order, which saves a
// conversion pass over every chunk.
func floatBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}

// encodeFloats returns f as little-endian bytes, a view of f when possible.
func encodeFloats(f []float32) []byte {
	if littleEndian() {
		return floatBytes(f)
	}
	b := make([]byte, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// decodeFloat32 fills dst from little-endian float32 bytes (len 4*len(dst)).
func decodeFloat32(dst []float32, src []byte) {
	if littleEndian() {
		copy(floatBytes(dst), src)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// decodeBFloat16 fills dst from little-endian bfloat16 bytes (len 2*len(dst)).
func decodeBFloat16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
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
