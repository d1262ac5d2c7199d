package serve

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/dataset"
)

// Workload is what is sent and how, with vllm bench serve's flags and
// defaults (percentiles default to 50,90,95,99 and every latency metric
// is reported).
type Workload struct {
	DatasetName       string   `json:"dataset_name"`
	DatasetPath       string   `json:"dataset_path,omitempty"`
	NumPrompts        int      `json:"num_prompts"`
	RandomInputLen    int      `json:"random_input_len"`
	RandomOutputLen   int      `json:"random_output_len"`
	RandomRangeRatio  float64  `json:"random_range_ratio"`
	ShareGPTOutputLen int      `json:"sharegpt_output_len,omitempty"`
	JSONLOutputLen    int      `json:"jsonl_output_len,omitempty"`
	Seed              uint64   `json:"seed"`
	IgnoreEOS         bool     `json:"ignore_eos"`
	NumWarmups        int      `json:"num_warmups"`
	RequestRate       string   `json:"request_rate"`              // comma list: a sweep
	MaxConcurrency    string   `json:"max_concurrency,omitempty"` // comma list: a sweep
	Burstiness        float64  `json:"burstiness"`
	MetricPercentiles string   `json:"metric_percentiles"`
	PercentileMetrics string   `json:"percentile_metrics"`
	Goodput           []string `json:"goodput,omitempty"` // KEY:MS pairs
	// The prefix_repetition dataset's shape (vllm bench serve's names).
	PrefixRepetitionPrefixLen   int `json:"prefix_repetition_prefix_len,omitempty"`
	PrefixRepetitionSuffixLen   int `json:"prefix_repetition_suffix_len,omitempty"`
	PrefixRepetitionNumPrefixes int `json:"prefix_repetition_num_prefixes,omitempty"`
	PrefixRepetitionOutputLen   int `json:"prefix_repetition_output_len,omitempty"`
}

// DefaultWorkload is the flags' defaults.
func DefaultWorkload() Workload {
	return Workload{
		DatasetName: "random", NumPrompts: 1000, RandomInputLen: 1024, RandomOutputLen: 128,
		PrefixRepetitionPrefixLen: 256, PrefixRepetitionSuffixLen: 256, PrefixRepetitionNumPrefixes: 10, PrefixRepetitionOutputLen: 128,
		Seed: 0, RequestRate: "inf", Burstiness: 1,
		MetricPercentiles: "50,90,95,99", PercentileMetrics: strings.Join(bench.Metrics, ","),
	}
}

// Plan is a checked Workload.
type Plan struct {
	Workload
	// Points are the sweep's load points, in the order run: each request
	// rate with each concurrency limit.
	Points   []bench.Load
	Settings bench.Settings
}

// ErrUsage is wrapped by every error about a flag's value.
var ErrUsage = errors.New("bad flag")

func usage(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUsage}, args...)...)
}

// Plan checks the workload's flags.
func (w Workload) Plan() (*Plan, error) {
	p := &Plan{Workload: w}
	rates, err := parseList("--request-rate", w.RequestRate, func(s string) (float64, error) {
		if s == "inf" {
			return math.Inf(1), nil
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || !(v > 0) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("must be a number > 0 or inf")
		}
		return v, nil
	})
	if err != nil {
		return nil, err
	}
	concs := []int{0}
	if w.MaxConcurrency != "" {
		if concs, err = parseList("--max-concurrency", w.MaxConcurrency, func(s string) (int, error) {
			v, err := strconv.Atoi(s)
			if err != nil || v < 1 {
				return 0, fmt.Errorf("must be an integer >= 1")
			}
			return v, nil
		}); err != nil {
			return nil, err
		}
	}
	if !(w.Burstiness > 0) {
		return nil, usage("--burstiness %v: must be > 0", w.Burstiness)
	}
	for _, r := range rates {
		for _, c := range concs {
			p.Points = append(p.Points, bench.Load{RequestRate: r, Burstiness: w.Burstiness, MaxConcurrency: c})
		}
	}
	switch {
	case w.NumPrompts < 1:
		return nil, usage("--num-prompts %d: must be >= 1", w.NumPrompts)
	case w.NumWarmups < 0:
		return nil, usage("--num-warmups %d: must be >= 0", w.NumWarmups)
	case w.ShareGPTOutputLen < 0:
		return nil, usage("--sharegpt-output-len %d: must be >= 0 (0: each reply's length)", w.ShareGPTOutputLen)
	case w.JSONLOutputLen < 0:
		return nil, usage("--jsonl-output-len %d: must be >= 0 (0: each line's output_tokens)", w.JSONLOutputLen)
	}
	switch w.DatasetName {
	case "random", "prefix_repetition":
		if w.DatasetPath != "" {
			return nil, usage("--dataset-path %s: the %s dataset reads no file (use --dataset-name sharegpt or jsonl)", w.DatasetPath, w.DatasetName)
		}
	case "sharegpt", "jsonl":
		if w.DatasetPath == "" {
			return nil, usage("--dataset-name %s needs --dataset-path", w.DatasetName)
		}
	default:
		return nil, usage("--dataset-name %q: must be random, prefix_repetition, sharegpt or jsonl", w.DatasetName)
	}
	if p.Settings.Percentiles, err = parseList("--metric-percentiles", w.MetricPercentiles, func(s string) (float64, error) {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || !(v > 0 && v < 100) {
			return 0, fmt.Errorf("must be a number in (0, 100)")
		}
		return v, nil
	}); err != nil {
		return nil, err
	}
	if p.Settings.PercentileMetrics, err = parseList("--percentile-metrics", w.PercentileMetrics, func(s string) (string, error) {
		if !slices.Contains(bench.Metrics, s) {
			return "", fmt.Errorf("must be one of %s", strings.Join(bench.Metrics, ", "))
		}
		return s, nil
	}); err != nil {
		return nil, err
	}
	if p.Settings.Goodput, err = parseGoodput(w.Goodput); err != nil {
		return nil, err
	}
	p.Settings.DatasetName = w.DatasetName
	return p, nil
}

// parseGoodput reads KEY:MS pairs (each argument may hold several,
// separated by commas or spaces).
func parseGoodput(args []string) (map[string]float64, error) {
	slo := map[string]float64{}
	for _, a := range args {
		for _, pair := range strings.FieldsFunc(a, func(r rune) bool { return r == ',' || r == ' ' }) {
			k, v, ok := strings.Cut(pair, ":")
			if !ok {
				return nil, usage("--goodput %q: want KEY:MILLISECONDS, such as ttft:500", pair)
			}
			if k != bench.TTFT && k != bench.TPOT && k != bench.E2EL {
				return nil, usage("--goodput %q: unknown key %q (want ttft, tpot or e2el)", pair, k)
			}
			ms, err := strconv.ParseFloat(v, 64)
			if err != nil || !(ms >= 0) || math.IsInf(ms, 0) { // NaN fails too
				return nil, usage("--goodput %q: %q is not a number of milliseconds >= 0", pair, v)
			}
			slo[k] = ms
		}
	}
	if len(slo) == 0 {
		return nil, nil
	}
	return slo, nil
}

// parseList parses a comma list, naming the flag in errors.
func parseList[T any](flag, s string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		v, err := parse(f)
		if err != nil {
			return nil, usage("%s %q: %v", flag, f, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// Requests builds the workload's prompts with the target's tokenizer.
func (p *Plan) Requests(tok dataset.Tokenizer) ([]dataset.Request, error) {
	switch p.DatasetName {
	case "sharegpt":
		return dataset.ShareGPT(tok, dataset.FileOptions{Path: p.DatasetPath, Num: p.NumPrompts, OutputLen: p.ShareGPTOutputLen, Seed: p.Seed})
	case "jsonl":
		return dataset.JSONL(tok, dataset.FileOptions{Path: p.DatasetPath, Num: p.NumPrompts, OutputLen: p.JSONLOutputLen, Seed: p.Seed})
	case "prefix_repetition":
		return dataset.PrefixRepetition(tok, dataset.PrefixRepetitionOptions{
			PrefixLen: p.PrefixRepetitionPrefixLen, SuffixLen: p.PrefixRepetitionSuffixLen, OutputLen: p.PrefixRepetitionOutputLen,
			NumPrefixes: p.PrefixRepetitionNumPrefixes, Num: p.NumPrompts, Seed: p.Seed,
		})
	}
	return dataset.Random(tok, dataset.RandomOptions{
		InputLen: p.RandomInputLen, OutputLen: p.RandomOutputLen, RangeRatio: p.RandomRangeRatio, Num: p.NumPrompts, Seed: p.Seed,
	})
}

// checkContext checks that every request fits the model's context
// (prompt and output tokens), when the model's shape is known, naming
// the flags that set the lengths.
func (p *Plan) checkContext(reqs []dataset.Request, m *Model) error {
	if m.Config == nil || m.Config.MaxPositions <= 0 {
		return nil
	}
	limit := m.Config.MaxPositions
	for i, q := range reqs {
		if q.PromptLen+q.OutputLen <= limit {
			continue
		}
		return usage("%s: request %d has %d prompt and %d output tokens, over the %d-token context of %s",
			p.lengthFlags(), i, q.PromptLen, q.OutputLen, limit, m.ID)
	}
	return nil
}

// lengthFlags names the flags that set the requests' lengths.
func (p *Plan) lengthFlags() string {
	switch p.DatasetName {
	case "random":
		return "--random-input-len and --random-output-len (with --random-range-ratio)"
	case "prefix_repetition":
		return "--prefix-repetition-prefix-len, --prefix-repetition-suffix-len and --prefix-repetition-output-len"
	case "sharegpt":
		return "--dataset-path " + p.DatasetPath + " (or --sharegpt-output-len)"
	}
	return "--dataset-path " + p.DatasetPath + " (or --jsonl-output-len)"
}

// IgnoresEOS says whether requests ask for every output token: always
// for the synthetic datasets, random and prefix_repetition (as vllm bench
// serve does for OpenAI-compatible backends), else when --ignore-eos is
// set.
func (p *Plan) IgnoresEOS() bool {
	return p.IgnoreEOS || p.DatasetName == "random" || p.DatasetName == "prefix_repetition"
}
