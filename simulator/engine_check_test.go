package simulator_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/costmodel"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/model/safetensors"
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
	if simulator.DefaultBlockSize != engine.DefaultBlockSize {
		t.Fatalf("simulator's block size %d, the engine's %d", simulator.DefaultBlockSize, engine.DefaultBlockSize)
	}
	// A block's bytes as the cost model counts them (the engine must
	// then make exactly tc.blocks of the budget, checked below).
	perToken, err := shapeOf(t, dir, "auto").KVBytesPerTokenPerRank(1)
	if err != nil {
		t.Fatal(err)
	}
	blockBytes := perToken * simulator.DefaultBlockSize

	type add struct {
		atStep        int
		id            string
		prompt, maxTk int
		prefix        int // the workload prefix its prompt starts with (0: none)
	}
	const prefixLen = 40 // 2 whole blocks and 8 tokens
	for _, tc := range []struct {
		name              string
		maxBatch, maxSeqs int
		blocks            int
		adds              []add
		preempts          bool
	}{
		{"chunked prefill beside decodes", 64, 8, 200, []add{
			{0, "a", 150, 6, 0}, {0, "b", 20, 10, 0}, {2, "c", 90, 4, 0}, {3, "d", 5, 12, 0},
		}, false},
		{"MaxSeqs bounds the batch", 128, 2, 200, []add{
			{0, "a", 10, 5, 0}, {0, "b", 11, 5, 0}, {0, "c", 12, 5, 0}, {1, "d", 13, 3, 0},
		}, false},
		{"preemption when blocks run out", 64, 8, 6, []add{
			{0, "a", 30, 20, 0}, {0, "b", 30, 20, 0}, {1, "c", 20, 20, 0},
		}, true},
		{"shared prefixes from the cache", 64, 8, 200, []add{
			{0, "a", 50, 4, 1}, {2, "b", 60, 3, 1}, {2, "c", 45, 5, 2}, {4, "d", 70, 2, 2}, {5, "e", 41, 3, 1}, {9, "f", 90, 2, 1},
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []simulator.StepRow
			// A preempted sequence recomputes from its cached blocks in the
			// engine, from the start in the simulator: the preemption case
			// runs without the prefix cache.
			e, err := engine.New(m, engine.Options{MaxBatchTokens: tc.maxBatch, MaxSeqs: tc.maxSeqs,
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
			sim := simulator.NewTestSched(tc.maxBatch, tc.maxSeqs, e.BlockSize(), tc.blocks, tc.preempts)
			for step := 0; step < 500; step++ {
				for _, a := range tc.adds {
					if a.atStep != step {
						continue
					}
					// Each prompt is its own tokens but for its workload
					// prefix's, which every prompt of that prefix shares.
					prompt := make([]int32, a.prompt)
					for i := range prompt {
						prompt[i] = int32(100 + 1000*int(a.id[0]-'a') + i)
						if a.prefix > 0 && i < prefixLen {
							prompt[i] = int32(50000 + 100*a.prefix + i)
						}
					}
					if err := e.Add(engine.Request{ID: a.id, Prompt: prompt, Params: engine.SamplingParams{MaxTokens: a.maxTk, IgnoreEOS: true}}); err != nil {
						t.Fatal(err)
					}
					if a.prefix > 0 {
						sim.Add(a.id, a.prompt, a.maxTk, a.prefix, prefixLen)
					} else {
						sim.Add(a.id, a.prompt, a.maxTk, 0, 0)
					}
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
					shared := slices.ContainsFunc(tc.adds, func(a add) bool { return a.prefix > 0 })
					if hits := e.PrefixStats().Hits; int(hits) != sim.PrefixHits() || shared != (hits > 0) {
						t.Errorf("prompt tokens from the prefix cache: engine %d, simulator %d; want some: %v", hits, sim.PrefixHits(), shared)
					}
					return
				}
			}
			t.Fatal("did not finish in 500 steps")
		})
	}
}

// shapeOf is the cost model's shape of the model in dir on the CPU with
// a --kv-cache-dtype.
func shapeOf(t *testing.T, dir, kvDType string) costmodel.Shape {
	t.Helper()
	cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := costmodel.KVCacheDTypeBytes(kvDType)
	if err != nil {
		t.Fatal(err)
	}
	s, err := costmodel.NewShape(filepath.Base(dir), cfg, costmodel.KindCPU, costmodel.DTypes{KV: kv})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The simulator's KV cache is the engine's: for every --kv-cache-dtype
// and weight dtype, the cost model's element size is the one the engine
// resolves, and a budget gives the simulator as many blocks as the
// engine makes of it.
func TestKVCacheMatchesTheEngine(t *testing.T) {
	be, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	hw, err := costmodel.HardwareByName("cpu")
	if err != nil {
		t.Fatal(err)
	}
	link, err := costmodel.LinkByName("loopback")
	if err != nil {
		t.Fatal(err)
	}
	for _, wd := range []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16} {
		dir, err := preset.Ensure(context.Background(), "gqa-tiny", preset.DefaultCacheDir(), preset.Options{DType: wd})
		if err != nil {
			t.Fatal(err)
		}
		m, err := engine.Open(dir, be, engine.Shard{})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"auto", "fp32", "bf16", "fp16", "float32", "bfloat16", "float16"} {
			kv, err := engine.ParseKVCacheDType(name)
			if err != nil {
				t.Fatal(err)
			}
			const budget = 3<<20 + 12345
			e, err := engine.New(m, engine.Options{KVCacheBytes: budget, MaxSeqs: 4, KVCacheDType: kv})
			if err != nil {
				t.Fatal(err)
			}
			shape := shapeOf(t, dir, name)
			want := map[engine.KVCacheDType]int{engine.KVFP32: 4, engine.KVBF16: 2, engine.KVFP16: 2}[e.KVCacheDType()]
			if shape.KVBytes != want {
				t.Errorf("%s weights, --kv-cache-dtype %s: cost model uses %d-byte KV, the engine %s", wd, name, shape.KVBytes, e.KVCacheDType())
			}
			cost, err := costmodel.New(shape, hw, link, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := simulator.KVBlocks(cost, 1, 4, budget)
			if _, total := e.KVBlocks(); err != nil || got != total {
				t.Errorf("%s weights, --kv-cache-dtype %s: simulator has %d blocks (%v), the engine %d", wd, name, got, err, total)
			}
		}
		m.Close()
	}
}
