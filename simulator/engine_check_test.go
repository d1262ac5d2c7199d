package simulator_test

import (
	"context"
	"slices"
	"testing"

	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/simulator"
)

// The simulator's scheduler must make the engine's choices: the same
// rows of the same sequences at the same positions, step after step,
// through chunked prefill, the MaxSeqs bound and recompute preemption.
// The real engine runs the tiny preset on the CPU backend.
func TestSchedulerMirrorsTheEngine(t *testing.T) {
	dir, err := preset.Ensure(context.Background(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	be, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	m, err := engine.Open(dir, be, engine.Shard{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := m.Config()
	blockBytes := int64(2 * cfg.Layers * cfg.KVHeads * cfg.HeadDim * 4 * 16)

	type add struct {
		atStep        int
		id            string
		prompt, maxTk int
	}
	for _, tc := range []struct {
		name              string
		maxBatch, maxSeqs int
		blocks            int
		adds              []add
		preempts          bool
	}{
		{"chunked prefill beside decodes", 64, 8, 200, []add{
			{0, "a", 150, 6}, {0, "b", 20, 10}, {2, "c", 90, 4}, {3, "d", 5, 12},
		}, false},
		{"MaxSeqs bounds the batch", 128, 2, 200, []add{
			{0, "a", 10, 5}, {0, "b", 11, 5}, {0, "c", 12, 5}, {1, "d", 13, 3},
		}, false},
		{"preemption when blocks run out", 64, 8, 6, []add{
			{0, "a", 30, 20}, {0, "b", 30, 20}, {1, "c", 20, 20},
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []simulator.StepRow
			// A preempted sequence recomputes from its cached blocks in the
			// engine, from the start in the simulator: the preemption case
			// runs without the prefix cache.
			e, err := engine.New(m, engine.Options{MaxBatchTokens: tc.maxBatch, MaxSeqs: tc.maxSeqs, BlockSize: 16,
				KVCacheBytes: int64(tc.blocks) * blockBytes, DisablePrefixCaching: tc.preempts,
				OnStep: func(r *engine.StepRecord) {
					for _, s := range r.Seqs {
						got = append(got, simulator.StepRow{ID: s.RequestID, Pos: s.Pos, Tokens: s.Tokens, Sampled: s.Sampled})
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			if _, total := e.KVBlocks(); total != tc.blocks {
				t.Fatalf("engine has %d blocks, want %d", total, tc.blocks)
			}
			sim := simulator.NewTestSched(tc.maxBatch, tc.maxSeqs, 16, tc.blocks)
			for step := 0; step < 500; step++ {
				for _, a := range tc.adds {
					if a.atStep != step {
						continue
					}
					// Prompts share no prefix, as the random dataset's:
					// the simulator does not model prefix-cache hits.
					prompt := make([]int32, a.prompt)
					for i := range prompt {
						prompt[i] = int32(100 + 1000*int(a.id[0]-'a') + i)
					}
					if err := e.Add(engine.Request{ID: a.id, Prompt: prompt, Params: engine.SamplingParams{MaxTokens: a.maxTk, IgnoreEOS: true}}); err != nil {
						t.Fatal(err)
					}
					sim.Add(a.id, a.prompt, a.maxTk)
				}
				got = nil
				want := sim.Step()
				if _, err := e.Step(context.Background()); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("step %d: engine scheduled %v, simulator %v", step, got, want)
				}
				if !e.HasWork() && !sim.HasWork() && step > tc.adds[len(tc.adds)-1].atStep {
					if free, _ := e.KVBlocks(); free != sim.FreeBlocks() {
						t.Errorf("free blocks at the end: engine %d, simulator %d", free, sim.FreeBlocks())
					}
					if tc.preempts != (sim.Preemptions() > 0) {
						t.Errorf("%d preemptions, want some: %v", sim.Preemptions(), tc.preempts)
					}
					return
				}
			}
			t.Fatal("did not finish in 500 steps")
		})
	}
}
