package engine

import (
	"sync"
	"testing"
)

// TestOpTimes: with Options.OpTimes a step records time for exactly the
// ops its model runs, within its compute time; without, none.
func TestOpTimes(t *testing.T) {
	cases := []struct {
		name  string
		skips []Op // ops the architecture does not have (at TP-1)
	}{
		{"tiny", []Op{OpAllReduce}},
		{"gpt2-124m", []Op{OpAllReduce, OpRoPE, OpGateProj}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := testModel(t, c.name, "f32", "auto")
			for _, on := range []bool{false, true} {
				var recs []StepRecord
				e := testEngine(t, m, Options{OpTimes: on, OnStep: func(r *StepRecord) { recs = append(recs, *r) }})
				if err := e.Add(Request{ID: "a", Prompt: testPrompt(20, m.cfg.VocabSize, 0), Params: greedy(3)}); err != nil {
					t.Fatal(err)
				}
				run(t, e)
				if len(recs) != 3 {
					t.Fatalf("%d steps recorded, want 3", len(recs))
				}
				for i, r := range recs {
					if !on {
						if r.Ops != (OpTimes{}) {
							t.Fatalf("step %d without OpTimes recorded %v", i, r.Ops)
						}
						continue
					}
					for op := range numOps {
						skip := false
						for _, s := range c.skips {
							skip = skip || s == op
						}
						if d := r.Ops[op]; skip != (d == 0) {
							t.Errorf("step %d: %v took %v; the model runs it: %v", i, op, d, !skip)
						}
					}
					if tot := r.Ops.Total(); tot > r.Compute {
						t.Errorf("step %d: ops total %v, more than the forward pass's %v", i, tot, r.Compute)
					}
				}
			}
		})
	}
}

// TestOpTimesAllReduce: under tensor parallelism every rank times its
// all-reduces.
func TestOpTimesAllReduce(t *testing.T) {
	var mu sync.Mutex
	var steps, summed int
	opts := Options{OpTimes: true, OnStep: func(r *StepRecord) {
		mu.Lock()
		defer mu.Unlock()
		steps++
		if r.Ops[OpAllReduce] > 0 && r.Ops[OpAllReduce] <= r.CollectiveTime {
			summed++
		}
	}}
	runTPWaves(t, "tiny", 2, opts, [][]Request{{{ID: "a", Prompt: testPrompt(9, 50257, 0), Params: greedy(4)}}})
	if steps == 0 || summed != steps {
		t.Fatalf("%d of %d step records (both ranks) timed their all-reduces within CollectiveTime", summed, steps)
	}
}
