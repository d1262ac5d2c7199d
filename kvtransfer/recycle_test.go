package kvtransfer

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tandemllm/tandem/parallel"
)

// shifted is a Source whose values differ from request to request.
type shifted struct {
	tokens, hd int
	shift      float32
}

func (s shifted) ReadLayer(layer int, heads parallel.Range, dst []float32) error {
	fill(dst, layer, s.tokens, heads, s.hd)
	for i := range dst {
		dst[i] += s.shift
	}
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
			recycled := map[*float32]bool{}
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
				want := make([]float32, 2*tokens*heads.Len()*hd)
				reused := 0
				for l := range layers {
					if err := src.ReadLayer(l, heads, want); err != nil {
						t.Fatal(err)
					}
					for j := range want {
						if got[l][j] != want[j] {
							t.Fatalf("request %d layer %d value %d: %g, want %g", i, l, j, got[l][j], want[j])
						}
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
