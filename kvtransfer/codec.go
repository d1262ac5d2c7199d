package kvtransfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec delegated to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// codec speaks standard protobuf on the wire but avoids copies for KVChunk:
// outgoing chunks (*outChunk) are marshalled as a header plus views of the
// sender's layer data, and incoming ones are decoded into the payload buffer
// the message already has. Every other message goes to gRPC's proto codec.
type codec struct {
	proto encoding.CodecV2
}

func newCodec() codec { return codec{proto: encoding.GetCodecV2("proto")} }

// Name is "proto" so the content-subtype stays application/grpc+proto.
func (codec) Name() string { return "proto" }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if o, ok := v.(*outChunk); ok {
		return o.marshal(), nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*tandemv1.KVChunk); ok {
		return unmarshalChunk(data, m)
	}
	return c.proto.Unmarshal(data, v)
}

// outChunk is a KVChunk on its way out: hdr holds fields 1-13 and the tag and
// length of the payload, k and v the payload (keys, values), which alias the
// sender's layer data, and tail the CRC field.
type outChunk struct {
	seq  uint32 // for tests' interceptors
	hdr  []byte
	k, v []byte
	tail [5]byte
}

// chunkHeader is the framing of a chunk, without its payload.
type chunkHeader struct {
	requestID            string
	attempt, seq, count  uint32
	sourceRank, destRank int
	layer                int
	heads, tokens        [2]int
	shape                [4]int
	dtype                tandemv1.DataType
	crc                  uint32
}

func newOutChunk(h chunkHeader, k, v []byte) *outChunk {
	o := &outChunk{seq: h.seq, k: k, v: v}
	b := h.appendFields(make([]byte, 0, 80+len(h.requestID)))
	b = protowire.AppendTag(b, 14, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(k)+len(v)))
	o.hdr = b
	t := protowire.AppendTag(o.tail[:0], 15, protowire.Fixed32Type)
	protowire.AppendFixed32(t, h.crc)
	return o
}

// appendFields appends KVChunk fields 1-13 of h (all but payload and CRC).
func (h *chunkHeader) appendFields(b []byte) []byte {
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, h.requestID)
	for _, f := range []struct {
		num protowire.Number
		v   uint64
	}{
		{2, uint64(h.attempt)},
		{3, uint64(h.seq)},
		{4, uint64(h.count)},
		{5, uint64(int64(h.sourceRank))},
		{6, uint64(int64(h.destRank))},
		{7, uint64(int64(h.layer))},
		{8, uint64(int64(h.heads[0]))},
		{9, uint64(int64(h.heads[1]))},
		{10, uint64(int64(h.tokens[0]))},
		{11, uint64(int64(h.tokens[1]))},
		{12, uint64(h.dtype)},
	} {
		if f.v != 0 { // proto3 leaves zero scalars out
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, f.v)
		}
	}
	var packed [4 * binary.MaxVarintLen64]byte
	shape := packed[:0]
	for _, d := range h.shape {
		shape = protowire.AppendVarint(shape, uint64(int64(d)))
	}
	b = protowire.AppendTag(b, 13, protowire.BytesType)
	return protowire.AppendBytes(b, shape)
}

// marshal returns the chunk's wire form without copying the payload. gRPC
// may write it after SendMsg returns, so k and v must stay unchanged until
// the stream ends (the sender never reuses layer data within a push).
func (o *outChunk) marshal() mem.BufferSlice {
	s := mem.BufferSlice{mem.SliceBuffer(o.hdr)}
	if len(o.k) > 0 {
		s = append(s, mem.SliceBuffer(o.k))
	}
	if len(o.v) > 0 {
		s = append(s, mem.SliceBuffer(o.v))
	}
	return append(s, mem.SliceBuffer(o.tail[:]))
}

var errMalformed = errors.New("kvtransfer: malformed KVChunk")

// unmarshalChunk decodes a KVChunk into m straight from gRPC's receive
// buffers, reusing m's payload and shape storage. Unknown fields are skipped.
func unmarshalChunk(data mem.BufferSlice, m *tandemv1.KVChunk) error {
	payload, shape := m.Payload[:0], m.Shape[:0]
	m.Reset()
	r := data.Reader()
	defer r.Close()
	w := wireReader{r}
	for r.Remaining() > 0 {
		tag, err := w.varint()
		if err != nil {
			return err
		}
		num, typ := protowire.DecodeTag(tag)
		if err := w.field(m, num, typ, &payload, &shape); err != nil {
			return err
		}
	}
	m.Payload, m.Shape = payload, shape
	return nil
}

// wireReader reads protobuf wire format; every error wraps errMalformed.
type wireReader struct{ r *mem.Reader }

func (w wireReader) varint() (uint64, error) {
	v, err := binary.ReadUvarint(w.r)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return v, nil
}

// length reads a length-delimited field's length, which must not pass
// the end of the data.
func (w wireReader) length() (int, error) {
	n, err := w.varint()
	if err == nil && n > uint64(w.r.Remaining()) {
		err = fmt.Errorf("%w: field length %d past the end", errMalformed, n)
	}
	return int(n), err
}

func (w wireReader) full(b []byte) error {
	if _, err := io.ReadFull(w.r, b); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	return nil
}

// field decodes field num of wire type typ into m: the request id, the
// payload (into *payload's storage), the shape packed or not (appended
// to *shape), the checksum, the other numbers; anything else is skipped.
func (w wireReader) field(m *tandemv1.KVChunk, num protowire.Number, typ protowire.Type, payload *[]byte, shape *[]int32) error {
	switch {
	case typ == protowire.VarintType && num >= 2 && num <= 13:
		v, err := w.varint()
		if err != nil {
			return err
		}
		setVarint(m, num, v, shape)
	case typ == protowire.BytesType && num == 1:
		n, err := w.length()
		if err != nil {
			return err
		}
		s := make([]byte, n)
		if err := w.full(s); err != nil {
			return err
		}
		m.RequestId = string(s)
	case typ == protowire.BytesType && num == 13: // packed shape
		n, err := w.length()
		if err != nil {
			return err
		}
		for end := w.r.Remaining() - n; w.r.Remaining() > end; {
			v, err := w.varint()
			if err != nil {
				return err
			}
			*shape = append(*shape, int32(v))
		}
	case typ == protowire.BytesType && num == 14:
		n, err := w.length()
		if err != nil {
			return err
		}
		if cap(*payload) < n {
			*payload = make([]byte, n)
		}
		*payload = (*payload)[:n]
		return w.full(*payload)
	case typ == protowire.Fixed32Type:
		var b [4]byte
		if err := w.full(b[:]); err != nil {
			return err
		}
		if num == 15 {
			m.Crc32C = binary.LittleEndian.Uint32(b[:])
		}
	default:
		return w.skip(typ)
	}
	return nil
}

func setVarint(m *tandemv1.KVChunk, num protowire.Number, v uint64, shape *[]int32) {
	switch num {
	case 2:
		m.Attempt = uint32(v)
	case 3:
		m.Seq = uint32(v)
	case 4:
		m.ChunkCount = uint32(v)
	case 5:
		m.SourceRank = int32(v)
	case 6:
		m.DestRank = int32(v)
	case 7:
		m.Layer = int32(v)
	case 8:
		m.HeadStart = int32(v)
	case 9:
		m.HeadEnd = int32(v)
	case 10:
		m.TokenStart = int32(v)
	case 11:
		m.TokenEnd = int32(v)
	case 12:
		m.Dtype = tandemv1.DataType(int32(v))
	case 13: // unpacked repeated int32
		*shape = append(*shape, int32(v))
	}
}

// skip consumes a field of an unknown (or unexpectedly typed) number.
func (w wireReader) skip(typ protowire.Type) error {
	var n int
	switch typ {
	case protowire.VarintType:
		_, err := w.varint()
		return err
	case protowire.Fixed32Type:
		n = 4
	case protowire.Fixed64Type:
		n = 8
	case protowire.BytesType:
		var err error
		if n, err = w.length(); err != nil {
			return err
		}
	default: // groups are not valid in proto3
		return fmt.Errorf("%w: wire type %d", errMalformed, typ)
	}
	if d, err := w.r.Discard(n); err != nil || d != n {
		return fmt.Errorf("%w: truncated field", errMalformed)
	}
	return nil
}
