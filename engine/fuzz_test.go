package engine

import (
	"encoding/binary"
	"testing"

	"github.com/tandemllm/tandem/compute"
)

// FuzzFollowPlan: a step plan as a follower receives it from rank 0 over
// the network (int32 words, little-endian) is either refused with an
// error or safe to run: the forward pass it drives reads and writes only
// inside the vocabulary, the context, the KV pool and the batch.
func FuzzFollowPlan(f *testing.F) {
	e, err := New(testModel(f, "tiny", "f32", ""), Options{MaxBatchTokens: 16, MaxSeqs: 4, BlockSize: 4, KVCacheBytes: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	words := func(b *batch) []byte {
		w := encodePlan(nil, b)
		out := make([]byte, 4*len(w))
		for i, v := range w {
			binary.LittleEndian.PutUint32(out[4*i:], uint32(v))
		}
		return out
	}
	// A prefill chunk of 5 tokens and a decode row, as rank 0 plans them.
	good := &batch{
		tokens:    []int32{11, 12, 13, 14, 15, 99},
		positions: []int32{0, 1, 2, 3, 4, 7},
		slots:     []int32{0, 1, 2, 3, 4, 11},
		seqs: []compute.AttnSeq{{QRow: 0, QLen: 5, Pos: 0, Blocks: []int32{0, 1}},
			{QRow: 5, QLen: 1, Pos: 7, Blocks: []int32{2, 2}}},
		logitRows: []int32{4, 5},
	}
	f.Add(words(good))
	bad := *good
	bad.tokens = []int32{11, 12, 13, 14, 15, 1 << 30}
	f.Add(words(&bad))
	bad = *good
	bad.seqs = []compute.AttnSeq{{QRow: 0, QLen: 6, Pos: 1 << 20, Blocks: []int32{0}}}
	f.Add(words(&bad))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4*headerWords || len(data)%4 != 0 {
			return
		}
		w := make([]int32, len(data)/4)
		for i := range w {
			w[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
		}
		header, body := w[:headerWords], w[headerWords:]
		if err := e.readPlan(header, body); err != nil {
			return
		}
		if _, err := e.forward(t.Context(), &e.batch); err != nil {
			t.Fatalf("a plan that passed the checks failed the forward pass: %v", err)
		}
	})
}
