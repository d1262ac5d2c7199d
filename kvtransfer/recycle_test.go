package kvtransfer

import (
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
