package kvtransfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tandemllm/tandem/internal/half"
	"github.com/tandemllm/tandem/parallel"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// shifted is a Source whose values differ from request to request.
type shifted struct {
	tokens, hd int
	shift      float32
}

func (s shifted) ReadLayer(layer int, heads parallel.Range, dst []byte) error {
	f := make([]float32, len(dst)/4)
	fill(f, layer, s.tokens, heads, s.hd)
	for i := range f {
		f[i] += s.shift
	}
	copy(dst, le32(f))
	return nil
}

// TestRecycledBuffersCarryNothingOver: layers given back with Recycle
// serve the next request, and what it gets is its own KV only, over both
// transports.
func TestRecycledBuffersCarryNothingOver(t *testing.T) {
	const layers, hd = 2, 8
	heads := parallel.Range{From: 0, To: 2}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			r, addr := serve(t, ReceiverOptions{Rank: 0, Heads: heads, HeadDim: hd, Layers: layers, MaxTokens: 64})
			s := newSender(t, tr.opts)
			recycled := map[*byte]bool{}
			for i, tokens := range []int{40, 23, 40} {
				id := fmt.Sprint("r", i)
				src := shifted{tokens: tokens, hd: hd, shift: float32(1000 * (i + 1))}
				if _, err := s.Push(ctx, src, SendSpec{RequestID: id, Attempt: 1, DestAddr: addr, Layers: layers,
					Tokens: tokens, Heads: heads, HeadDim: hd, MaxChunkBytes: 512}); err != nil {
					t.Fatal(err)
				}
				got, err := r.Await(ctx, Expect{RequestID: id, Attempt: 1, Tokens: tokens, SourceTP: 1, KVHeads: 2, DestTP: 1})
				if err != nil {
					t.Fatal(err)
				}
				want := make([]byte, 4*2*tokens*heads.Len()*hd)
				reused := 0
				for l := range layers {
					if err := src.ReadLayer(l, heads, want); err != nil {
						t.Fatal(err)
					}
					if j := firstDiff(got[l], want); j >= 0 {
						t.Fatalf("request %d layer %d differs from byte %d on", i, l, j)
					}
					if recycled[&got[l][0]] {
						reused++
					}
				}
				if i > 0 && reused == 0 {
					t.Errorf("request %d got no recycled buffer", i)
				}
				for _, b := range got {
					recycled[&b[0]] = true
				}
				r.Recycle(got)
			}
		})
	}
}

// TestBufferBudget: KV beyond MaxBufferedBytes is refused, and what Await
// claims no longer counts against it.
func TestBufferBudget(t *testing.T) {
	const layers, hd, tokens = 2, 8, 32
	heads := parallel.Range{From: 0, To: 2}
	perRequest := int64(layers * 2 * tokens * heads.Len() * hd * 4)
	ctx := testCtx(t, 10*time.Second)
	r, addr := serve(t, ReceiverOptions{Rank: 0, Heads: heads, HeadDim: hd, Layers: layers, MaxTokens: 64, MaxBufferedBytes: perRequest + perRequest/2})
	s := newSender(t, SenderOptions{MaxAttempts: 1})
	push := func(id string) error {
		_, err := s.Push(ctx, shifted{tokens: tokens, hd: hd}, SendSpec{RequestID: id, Attempt: 1, DestAddr: addr,
			Layers: layers, Tokens: tokens, Heads: heads, HeadDim: hd})
		return err
	}
	if err := push("a"); err != nil {
		t.Fatalf("a request within the budget: %v", err)
	}
	if err := push("b"); !errors.Is(err, ErrTransferFailed) {
		t.Fatalf("a second request past the budget: %v, want ErrTransferFailed", err)
	}
	r.Drop("b")
	if _, err := r.Await(ctx, Expect{RequestID: "a", Attempt: 1, Tokens: tokens, SourceTP: 1, KVHeads: 2, DestTP: 1}); err != nil {
		t.Fatal(err)
	}
	if err := push("c"); err != nil {
		t.Fatalf("after a was claimed: %v", err)
	}
}

// TestLateStreamsDoNotRebuffer: a stream for a request whose KV was
// already claimed or dropped is refused instead of buffering it again.
func TestLateStreamsDoNotRebuffer(t *testing.T) {
	const layers, hd, tokens = 2, 8, 16
	heads := parallel.Range{From: 0, To: 2}
	ctx := testCtx(t, 10*time.Second)
	r, addr := serve(t, ReceiverOptions{Rank: 0, Heads: heads, HeadDim: hd, Layers: layers, MaxTokens: 64})
	s := newSender(t, SenderOptions{MaxAttempts: 1})
	push := func(id string, attempt uint32) error {
		_, err := s.Push(ctx, shifted{tokens: tokens, hd: hd}, SendSpec{RequestID: id, Attempt: attempt, DestAddr: addr,
			Layers: layers, Tokens: tokens, Heads: heads, HeadDim: hd})
		return err
	}
	if err := push("claimed", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Await(ctx, Expect{RequestID: "claimed", Attempt: 1, Tokens: tokens, SourceTP: 1, KVHeads: 2, DestTP: 1}); err != nil {
		t.Fatal(err)
	}
	r.Drop("dropped")
	for _, c := range []struct {
		id      string
		attempt uint32
		refused bool
	}{
		{"claimed", 1, true}, {"dropped", 1, true}, {"dropped", 7, true}, {"claimed", 2, false},
	} {
		err := push(c.id, c.attempt)
		if refused := errors.Is(err, ErrTransferFailed); refused != c.refused {
			t.Errorf("%s attempt %d: %v, refused %v", c.id, c.attempt, err, c.refused)
		}
	}
	if n := r.Pending(); n != 1 { // only attempt 2 of "claimed", a new transfer
		t.Errorf("%d requests buffered, want 1", n)
	}
}

// firstDiff is the first index where a and b differ, -1 if none.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestDTypeConversion: the sender ships its cache's dtype and the receiver
// assembles its own, converting once on receipt (16-bit types widened
// exactly, float32 rounded to nearest even), over both transports, with
// several source ranks writing parts of each row.
func TestDTypeConversion(t *testing.T) {
	const layers, hd, tokens = 2, 8, 29
	f32, bf16, f16 := tandemv1.DataType_DATA_TYPE_FLOAT32, tandemv1.DataType_DATA_TYPE_BFLOAT16, tandemv1.DataType_DATA_TYPE_FLOAT16
	heads := parallel.Range{From: 0, To: 4}
	pairs := []struct{ send, recv tandemv1.DataType }{
		{f32, bf16}, {bf16, f32}, {bf16, bf16}, {f32, f32},
		{f32, f16}, {f16, f32}, {f16, f16}, {bf16, f16}, {f16, bf16},
	}
	for _, tr := range transports {
		for _, c := range pairs {
			t.Run(fmt.Sprintf("%s/%v-to-%v", tr.name, c.send, c.recv), func(t *testing.T) {
				ctx := testCtx(t, 10*time.Second)
				r, addr := serve(t, ReceiverOptions{Rank: 0, Heads: heads, HeadDim: hd, Layers: layers, MaxTokens: 64, DType: c.recv})
				s := newSender(t, tr.opts)
				// Two source ranks (TP 2 → TP 1) with two heads each.
				for src := range 2 {
					sub := parallel.Range{From: 2 * src, To: 2*src + 2}
					spec := SendSpec{RequestID: "c", Attempt: 1, SourceRank: src, DestAddr: addr, Layers: layers,
						Tokens: tokens, Heads: sub, HeadDim: hd, DType: c.send, MaxChunkBytes: 300}
					st, err := s.Push(ctx, typed{tokens: tokens, hd: hd, dt: c.send}, spec)
					if err != nil {
						t.Fatal(err)
					}
					if want := int64(layers * 2 * tokens * sub.Len() * hd * ElemSize(c.send)); st.Bytes != want {
						t.Fatalf("pushed %d bytes, want %d", st.Bytes, want)
					}
				}
				got, err := r.Await(ctx, Expect{RequestID: "c", Attempt: 1, Tokens: tokens, SourceTP: 2, KVHeads: 4, DestTP: 1})
				if err != nil {
					t.Fatal(err)
				}
				for l := range layers {
					f := make([]float32, 2*tokens*heads.Len()*hd)
					fill(f, l, tokens, heads, hd)
					want := encodeAs(c.recv, held(c.send, f))
					if j := firstDiff(got[l], want); j >= 0 {
						t.Fatalf("layer %d differs from byte %d on", l, j)
					}
				}
			})
		}
	}
}

// typed is a Source of val in a given dtype.
type typed struct {
	tokens, hd int
	dt         tandemv1.DataType
}

func (s typed) ReadLayer(layer int, heads parallel.Range, dst []byte) error {
	f := make([]float32, 2*s.tokens*heads.Len()*s.hd)
	fill(f, layer, s.tokens, heads, s.hd)
	copy(dst, encodeAs(s.dt, f))
	return nil
}

// encodeAs is f as little-endian elements of dt, rounded to nearest even
// for a 16-bit dt.
func encodeAs(dt tandemv1.DataType, f []float32) []byte {
	switch dt {
	case tandemv1.DataType_DATA_TYPE_BFLOAT16:
		return le16(f)
	case tandemv1.DataType_DATA_TYPE_FLOAT16:
		b := make([]byte, 2*len(f))
		for i, v := range f {
			binary.LittleEndian.PutUint16(b[2*i:], half.F16FromFloat32(v))
		}
		return b
	}
	return le32(f)
}

// held is f as a cache of dt holds it: rounded to a 16-bit dt and back.
func held(dt tandemv1.DataType, f []float32) []float32 {
	out := make([]float32, len(f))
	for i, v := range f {
		switch dt {
		case tandemv1.DataType_DATA_TYPE_BFLOAT16:
			v = half.BF16ToFloat32(half.BF16FromFloat32(v))
		case tandemv1.DataType_DATA_TYPE_FLOAT16:
			v = half.F16ToFloat32(half.F16FromFloat32(v))
		}
		out[i] = v
	}
	return out
}
