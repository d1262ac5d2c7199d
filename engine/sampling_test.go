package engine

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSamplingParamsValidate(t *testing.T) {
	ok := SamplingParams{MaxTokens: 1}
	tests := []struct {
		name  string
		edit  func(*SamplingParams)
		field string // empty: valid
	}{
		{"defaults", func(*SamplingParams) {}, ""},
		{"negative temperature", func(p *SamplingParams) { p.Temperature = -0.5 }, "temperature"},
		{"NaN temperature", func(p *SamplingParams) { p.Temperature = math.NaN() }, "temperature"},
		{"top_p above 1", func(p *SamplingParams) { p.TopP = 1.5 }, "top_p"},
		{"negative top_k", func(p *SamplingParams) { p.TopK = -1 }, "top_k"},
		{"zero max_tokens", func(p *SamplingParams) { p.MaxTokens = 0 }, "max_tokens"},
		{"too many logprobs", func(p *SamplingParams) { p.TopLogprobs = MaxLogprobs + 1 }, "top_logprobs"},
		{"empty stop string", func(p *SamplingParams) { p.Stop = []string{""} }, "stop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			tt.edit(&p)
			err := p.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidParams) {
				t.Fatalf("Validate() = %v, want ErrInvalidParams", err)
			}
			if !contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name the field %q", err, tt.field)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func randomLogits(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	l := make([]float32, n)
	for i := range l {
		l[i] = float32(r.NormFloat64() * 3)
	}
	return l
}

// TestArgmax checks argmax against a plain scan on every length up to a
// few lanes past its four, ties, NaN and -Inf.
func TestArgmax(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	scan := func(l []float32) int32 {
		best := -1
		for i, v := range l {
			if v > float32(math.Inf(-1)) && (best < 0 || v > l[best]) {
				best = i
			}
		}
		return int32(max(best, 0))
	}
	cases := [][]float32{
		nil, {}, {1}, {nan}, {-inf}, {-inf, -inf, -inf},
		{nan, 1, 2}, {2, nan, 2}, {1, 3, 3, 3, 3, 3}, {0, 0, 0, 0, 0, 0, 0, 0, 0},
		{-inf, -inf, -inf, -inf, -5, -inf}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 9}, {inf, 1, inf},
		{5, 1, 1, 1, 5, 1, 1, 1, 5},
	}
	for n := range 13 {
		cases = append(cases, randomLogits(n, uint64(n)))
	}
	for _, l := range cases {
		if got, want := argmax(l), scan(l); got != want {
			t.Errorf("argmax(%v) = %d, want %d", l, got, want)
		}
	}
	// The largest value at every position of a long row, and ties of it
	// at two positions in every pair of lanes.
	l := randomLogits(103, 9)
	for p := range l {
		row := slices.Clone(l)
		row[p] = 100
		if got := argmax(row); got != int32(p) {
			t.Fatalf("largest at %d: argmax = %d", p, got)
		}
		for q := p + 1; q < len(l) && q < p+9; q++ {
			row[q] = 100
			if got := argmax(row); got != int32(p) {
				t.Fatalf("tie at %d and %d: argmax = %d", p, q, got)
			}
			row[q] = l[q]
		}
	}
}

func TestSelectTop(t *testing.T) {
	for _, k := range []int{1, 2, 7, 100, 999, 1000} {
		logits := randomLogits(1000, uint64(k))
		idx := make([]int32, len(logits))
		for i := range idx {
			idx[i] = int32(i)
		}
		selectTop(idx, logits, k)
		minTop := float32(math.Inf(1))
		for _, i := range idx[:k] {
			minTop = min(minTop, logits[i])
		}
		for _, i := range idx[k:] {
			if logits[i] > minTop {
				t.Fatalf("k=%d: logit %v outside the top set exceeds its minimum %v", k, logits[i], minTop)
			}
		}
	}
}

func TestSamplerGreedyLimits(t *testing.T) {
	logits := randomLogits(5000, 7)
	want := argmax(logits)
	seed := uint64(3)
	for _, p := range []SamplingParams{
		{Temperature: 0, MaxTokens: 1},
		{Temperature: 1, TopK: 1, MaxTokens: 1, Seed: &seed},
		{Temperature: 1, TopP: 1e-9, MaxTokens: 1, Seed: &seed},
		{Temperature: 1e-4, MaxTokens: 1, Seed: &seed},
	} {
		if got := newSampler(p).sample(logits, 0); got != want {
			t.Errorf("%+v: sampled %d, want the argmax %d", p, got, want)
		}
	}
}

// TestSamplerDistribution checks sampled frequencies against the softmax
// of the logits at the given temperature, restricted to top-k/top-p.
func TestSamplerDistribution(t *testing.T) {
	logits := []float32{2, 1, 0.5, 0, -1, -3}
	tests := []struct {
		name string
		p    SamplingParams
		keep int // tokens left after top-k/top-p (logits are sorted)
	}{
		{"temperature 1", SamplingParams{Temperature: 1}, 6},
		{"temperature 0.5", SamplingParams{Temperature: 0.5}, 6},
		{"top-k 3", SamplingParams{Temperature: 1, TopK: 3}, 3},
		{"top-p 0.8", SamplingParams{Temperature: 1, TopP: 0.8}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seed := uint64(42)
			tt.p.Seed, tt.p.MaxTokens = &seed, 1
			s := newSampler(tt.p)
			want := make([]float64, len(logits))
			var sum float64
			for i := range tt.keep {
				want[i] = math.Exp(float64(logits[i]) / tt.p.Temperature)
				sum += want[i]
			}
			const n = 200000
			counts := make([]int, len(logits))
			for pos := range n {
				counts[s.sample(logits, pos)]++
			}
			for i := range want {
				want[i] /= sum
				got := float64(counts[i]) / n
				if math.Abs(got-want[i]) > 0.005 {
					t.Errorf("token %d: frequency %.4f, want %.4f", i, got, want[i])
				}
			}
		})
	}
}

func TestSamplerSeedReproducible(t *testing.T) {
	logits := randomLogits(1000, 9)
	draw := func(seed uint64) []int32 {
		s := newSampler(SamplingParams{Temperature: 1, MaxTokens: 1, Seed: &seed})
		out := make([]int32, 50)
		for i := range out {
			out[i] = s.sample(logits, i)
		}
		return out
	}
	a, b, c := draw(1), draw(1), draw(2)
	same := func(x, y []int32) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Error("same seed gave different tokens")
	}
	if same(a, c) {
		t.Error("different seeds gave the same 50 tokens")
	}
}

func TestLogprobs(t *testing.T) {
	logits := randomLogits(300, 5)
	chosen, top := logprobs(logits, 17, 5, nil)
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v))
	}
	want := float64(logits[17]) - math.Log(sum)
	if math.Abs(float64(chosen.Logprob)-want) > 1e-4 {
		t.Errorf("chosen logprob %v, want %v", chosen.Logprob, want)
	}
	if len(top) != 5 || top[0].Token != argmax(logits) {
		t.Fatalf("top logprobs %+v: want 5 entries led by the argmax %d", top, argmax(logits))
	}
	for i := 1; i < len(top); i++ {
		if top[i].Logprob > top[i-1].Logprob {
			t.Errorf("top logprobs not sorted: %+v", top)
		}
	}
}

func TestTakeTextStopStrings(t *testing.T) {
	tests := []struct {
		name    string
		pieces  []string
		stops   []string
		want    []string // delta after each piece
		stopped int      // index of the piece that stops, -1 for none
	}{
		{"no stops", []string{"a", "b", "c"}, nil, []string{"a", "b", "c"}, -1},
		{"stop inside piece", []string{"hel", "lo wor", "ld"}, []string{"o w"}, []string{"hel", "l"}, 1},
		{"stop across pieces is held back", []string{"ab", "<", "/s", ">x"}, []string{"</s>"}, []string{"ab", "", "", ""}, 3},
		{"false start released", []string{"a<", "b"}, []string{"<|"}, []string{"a", "<b"}, -1},
		{"earliest of two stops", []string{"xyz END stop"}, []string{"stop", "END"}, []string{"xyz "}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sequence{}
			var got []string
			stoppedAt := -1
			for i, p := range tt.pieces {
				s.text.WriteString(p)
				d, stopped := s.takeText(tt.stops, false)
				got = append(got, d)
				if stopped {
					stoppedAt = i
					break
				}
			}
			if stoppedAt != tt.stopped {
				t.Fatalf("stopped at piece %d, want %d", stoppedAt, tt.stopped)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("deltas %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("deltas %q, want %q", got, tt.want)
				}
			}
		})
	}
}

// TestSamplerTopKOrderIsCanonical: logits that differ only in their last
// bits (another TP degree, a recomputed prompt) draw the same tokens:
// the top-k candidates are walked in token order, not in the order
// quickselect happened to leave them.
func TestSamplerTopKOrderIsCanonical(t *testing.T) {
	const vocab, k = 4000, 50
	rng := rand.New(rand.NewPCG(1, 2))
	a, b := make([]float32, vocab), make([]float32, vocab)
	for i := range a {
		a[i] = -5 // well below the top k, which are therefore the same set
		if i%(vocab/k) == 0 {
			a[i] = 1 + float32(rng.IntN(4))/4 // ties, broken differently below
		}
		b[i] = a[i] + float32(rng.Float64()-0.5)*1e-5
	}
	seed := uint64(5)
	p := SamplingParams{Temperature: 1, TopK: k, MaxTokens: 1, Seed: &seed}
	sa, sb := newSampler(p), newSampler(p)
	differ := 0
	const n = 2000
	for pos := range n {
		if sa.sample(a, pos) != sb.sample(b, pos) {
			differ++
		}
	}
	if differ > n/100 {
		t.Fatalf("%d of %d draws differ between logits equal to 1e-5", differ, n)
	}
}
