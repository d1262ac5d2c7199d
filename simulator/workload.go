package simulator

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/tandemllm/tandem/bench"
)

// ErrInvalidWorkload is wrapped by every workload validation error.
var ErrInvalidWorkload = errors.New("invalid workload")

// Request is one request of a workload: its prompt and output lengths in
// tokens (the output is generated to its end, as with --ignore-eos), and
// the shared prefix its prompt starts with: Prefix names it (0: none),
// PrefixLen is its tokens, counted in Input. Block is the benchmark run
// the request is sent in (see Workload.Requests). Restart, on the first
// request of a block, says the deployment was started afresh before that
// run: its prefix caches start empty. Without it a block finds what the
// blocks before it left cached, as a deployment kept running would.
type Request struct {
	Input, Output     int
	Prefix, PrefixLen int
	Block             int
	Restart           bool
}

// Workload is what the simulated clients send, as `vllm bench serve`
// sends it.
type Workload struct {
	// Requests, if set, are sent in order, block by block: a merged
	// benchmark result (`tandem bench compare` runs each round's halves
	// as runs of their own) is several runs one after another, each
	// starting on an idle deployment with its own concurrency bound and
	// arrival clock, so a block's requests are sent once every request
	// of the block before has finished; its prefix caches are what the
	// blocks before left unless its first request says the deployment
	// was restarted (Request.Restart). Otherwise NumPrompts requests
	// are drawn from InputLen, OutputLen and RangeRatio: each length
	// uniform on [len·(1−r), len·(1+r)], as vLLM's random dataset.
	Requests            []Request
	NumPrompts          int
	InputLen, OutputLen int
	RangeRatio          float64
	// PrefixLen is, when positive, a shared prefix every drawn prompt
	// starts with before its InputLen tokens of its own, one of
	// NumPrefixes (default 1) used by as many prompts each, in a shuffled
	// order: vLLM's --random-prefix-len, or the prefix_repetition
	// dataset with InputLen as its suffix.
	PrefixLen, NumPrefixes int
	// RequestRate is the mean arrival rate in requests per second; zero
	// or +Inf sends every request at once. Burstiness is the gamma shape
	// of the gaps (default 1: Poisson). The times are bench.Arrivals', so
	// a seed gives the schedule `tandem bench --seed` sends.
	RequestRate, Burstiness float64
	// MaxConcurrency bounds the requests in flight (0: no bound).
	MaxConcurrency int
	// Seed makes the lengths and arrivals reproducible.
	Seed uint64
}

// requests returns the workload's requests and their arrival times,
// each from the start of its block.
func (w Workload) requests() ([]Request, []float64, error) {
	rng := rand.New(rand.NewPCG(w.Seed, 0x74616e64656d)) // "tandem"
	reqs := w.Requests
	if len(reqs) == 0 {
		if w.NumPrompts <= 0 || w.InputLen <= 0 || w.OutputLen <= 0 {
			return nil, nil, fmt.Errorf("%w: want positive num prompts, input and output lengths (got %d, %d, %d)",
				ErrInvalidWorkload, w.NumPrompts, w.InputLen, w.OutputLen)
		}
		if w.RangeRatio < 0 || w.RangeRatio >= 1 {
			return nil, nil, fmt.Errorf("%w: range ratio %g outside [0, 1)", ErrInvalidWorkload, w.RangeRatio)
		}
		if w.PrefixLen < 0 || w.NumPrefixes < 0 {
			return nil, nil, fmt.Errorf("%w: negative prefix length %d or number of prefixes %d", ErrInvalidWorkload, w.PrefixLen, w.NumPrefixes)
		}
		reqs = make([]Request, w.NumPrompts)
		for i := range reqs {
			reqs[i] = Request{Input: draw(rng, w.InputLen, w.RangeRatio), Output: draw(rng, w.OutputLen, w.RangeRatio)}
		}
		if w.PrefixLen > 0 {
			k := max(1, w.NumPrefixes)
			for i := range reqs {
				reqs[i].Input += w.PrefixLen
				reqs[i].Prefix, reqs[i].PrefixLen = 1+i%k, w.PrefixLen
			}
			rng.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
		}
	}
	for i, r := range reqs {
		if r.Input < 1 || r.Output < 1 || r.PrefixLen < 0 || r.PrefixLen >= r.Input || (r.Prefix == 0) != (r.PrefixLen == 0) {
			return nil, nil, fmt.Errorf("%w: request %d has %d prompt tokens (a prefix %d of %d) and %d output tokens",
				ErrInvalidWorkload, i, r.Input, r.Prefix, r.PrefixLen, r.Output)
		}
		if r.Block < 0 || i > 0 && r.Block < reqs[i-1].Block {
			return nil, nil, fmt.Errorf("%w: request %d is in block %d: want blocks numbered from 0, in order", ErrInvalidWorkload, i, r.Block)
		}
		if r.Restart && i > 0 && r.Block == reqs[i-1].Block {
			return nil, nil, fmt.Errorf("%w: request %d restarts the deployment in the middle of block %d: want Restart on a block's first request only", ErrInvalidWorkload, i, r.Block)
		}
	}
	if w.RequestRate < 0 || math.IsNaN(w.RequestRate) || w.Burstiness < 0 || w.MaxConcurrency < 0 {
		return nil, nil, fmt.Errorf("%w: negative request rate, burstiness or max concurrency", ErrInvalidWorkload)
	}
	at := make([]float64, len(reqs))
	if w.RequestRate > 0 && !math.IsInf(w.RequestRate, 1) {
		shape := w.Burstiness
		if shape == 0 {
			shape = 1
		}
		// The bench's own arrival times: the same seed sends the same
		// schedule in the simulation as in `tandem bench`, each run (block)
		// from its own start.
		for lo := 0; lo < len(reqs); {
			hi := lo + 1
			for hi < len(reqs) && reqs[hi].Block == reqs[lo].Block {
				hi++
			}
			for i, d := range bench.Arrivals(hi-lo, w.RequestRate, shape, w.Seed) {
				at[lo+i] = d.Seconds()
			}
			lo = hi
		}
	}
	return reqs, at, nil
}

// draw is vLLM's random length: uniform on the integers of
// [⌊n(1−r)⌋, ⌊n(1+r)⌋], at least 1.
func draw(rng *rand.Rand, n int, r float64) int {
	lo, hi := int(float64(n)*(1-r)), int(float64(n)*(1+r))
	return max(1, lo+rng.IntN(hi-lo+1))
}
