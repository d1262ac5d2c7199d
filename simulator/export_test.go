package simulator

import "github.com/tandemllm/tandem/costmodel"

// TestSched exposes the scheduler mirror to the external tests that
// check it against the real engine.
type TestSched struct {
	e    sched
	byID map[string]*seq
}

// StepRow is one sequence's part of a scheduled step.
type StepRow struct {
	ID          string
	Pos, Tokens int
	Sampled     bool
}

func NewTestSched(maxBatch, maxSeqs, blockSize, blocks int, noPrefixCaching bool) *TestSched {
	o := EngineOptions{MaxBatchTokens: maxBatch, MaxSeqs: maxSeqs, BlockSize: blockSize, DisablePrefixCaching: noPrefixCaching}
	o.defaults()
	return &TestSched{e: sched{opts: o, free: blocks, total: blocks}, byID: map[string]*seq{}}
}

// Add queues a request whose prompt starts with workload prefix prefix
// (0: none) of prefixLen tokens.
func (t *TestSched) Add(id string, prompt, maxTokens, prefix, prefixLen int) {
	r := &request{Request: Request{Input: prompt, Output: maxTokens, Prefix: prefix, PrefixLen: prefixLen}}
	s := &seq{r: r, tokens: prompt, maxTokens: maxTokens}
	t.byID[id] = s
	t.e.waiting = append(t.e.waiting, s)
}

// Step schedules and completes one step, as the engine's Step does.
func (t *TestSched) Step() []StepRow {
	var out []StepRow
	for _, st := range t.e.schedule() {
		var id string
		for k, v := range t.byID {
			if v == st.s {
				id = k
			}
		}
		out = append(out, StepRow{ID: id, Pos: st.s.computed, Tokens: st.n, Sampled: st.sample})
		st.s.computed += st.n
		t.e.register(st.s)
		if st.sample {
			st.s.tokens++
			st.s.generated++
			if st.s.generated >= st.s.maxTokens {
				t.e.finish(st.s)
			}
		}
	}
	return out
}

func (t *TestSched) HasWork() bool { return t.e.hasWork() }

func (t *TestSched) FreeBlocks() int { return t.e.free }

// Preemptions counts the preemptions so far.
func (t *TestSched) Preemptions() int {
	n := 0
	for _, s := range t.byID {
		n += s.r.preemptions
	}
	return n
}

// PrefixHits is the prompt tokens taken from the prefix cache so far.
func (t *TestSched) PrefixHits() int { return t.e.hits }

// KVBlocks is the KV blocks the simulator gives a TP-tp rank with a
// cache of kvBytes (engine options at their defaults but for maxSeqs).
func KVBlocks(m *costmodel.Model, tp, maxSeqs int, kvBytes float64) (int, error) {
	eo := EngineOptions{MaxSeqs: maxSeqs}
	eo.defaults()
	return kvBlocks(m, tp, eo, kvBytes)
}
