package calibration

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/tandemllm/tandem/bench/compare"
	"github.com/tandemllm/tandem/costmodel"
	"github.com/tandemllm/tandem/planner"
	"github.com/tandemllm/tandem/simulator"
)

// ErrNoRuns is returned when a path holds no usable compare report.
var ErrNoRuns = errors.New("no tandem bench compare report")

// Case is one configuration at one load point of a compare report: what
// to simulate and what was measured.
type Case struct {
	// Name is "configuration @ load point [--link PROFILE]", Source the
	// report file.
	Name, Source string
	Deployment   simulator.Deployment
	Link         string
	Model        string
	// KVCacheDType is the workers' --kv-cache-dtype (empty: auto).
	KVCacheDType string
	// BackgroundLoad, if set, is the shared device's background load
	// measured while this case's run ran; it replaces the efficiency
	// factors' own when the case is predicted.
	BackgroundLoad *float64
	Engine         simulator.EngineOptions
	Workload       simulator.Workload
	// Measured holds the bench's figures under vLLM's result keys
	// (milliseconds, tokens per second) and the per-token split under
	// the compare report's keys (compute_ms_per_token, ...).
	Measured map[string]float64
}

// result is the part of a bench result (vLLM's keys) a case needs.
type result struct {
	InputLens  []int     `json:"input_lens"`
	OutputLens []int     `json:"output_lens"`
	Errors     []string  `json:"errors"`
	StartTimes []float64 `json:"start_times"`
	RequestIDs []string  `json:"request_ids"`
}

// Metrics compared, under vLLM's result keys.
var benchKeys = []string{"median_ttft_ms", "mean_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "mean_tpot_ms", "p99_tpot_ms",
	"median_itl_ms", "mean_e2el_ms", "output_throughput"}

// Parts compared: the compare report's per-token split.
var partKeys = []string{"compute_ms_per_token", "allreduce_ms_per_token", "kv_transfer_ms_per_token", "sampling_ms_per_token"}

// LoadCases reads every compare report in path (a report file, or a
// directory of them) into cases.
func LoadCases(path string) ([]Case, error) {
	files := []string{path}
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if st.IsDir() {
		files, _ = filepath.Glob(filepath.Join(path, "*.json"))
		slices.Sort(files)
	}
	var out []Case
	for _, f := range files {
		cs, err := loadReport(f)
		if errors.Is(err, ErrNoRuns) && len(files) > 1 {
			continue // a directory may hold other JSON files
		}
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w in %s", ErrNoRuns, path)
	}
	return out, nil
}

func loadReport(file string) ([]Case, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var rep compare.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", file, ErrNoRuns, err)
	}
	if len(rep.Configurations) == 0 || len(rep.Points) == 0 {
		return nil, fmt.Errorf("%s: %w (no configurations or load points)", file, ErrNoRuns)
	}
	byName := map[string]compare.Configuration{}
	for _, c := range rep.Configurations {
		byName[c.Name] = c
	}
	var out []Case
	for _, p := range rep.Points {
		for _, cp := range p.Configs {
			cf, ok := byName[cp.Name]
			if !ok {
				return nil, fmt.Errorf("%s: load point %s names configuration %q, which the report does not list", file, p.Load, cp.Name)
			}
			c, err := newCase(file, rep, p, cp, cf)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", file, cp.Name, err)
			}
			out = append(out, c)
		}
	}
	return out, nil
}

func newCase(file string, rep compare.Report, p *compare.Point, cp *compare.ConfigPoint, cf compare.Configuration) (Case, error) {
	c := Case{Name: cp.Name + " @ " + p.Load, Source: file, Model: cf.Model, Measured: map[string]float64{}}
	if cf.Addr != "" || cf.URL != "" {
		return c, fmt.Errorf("a running deployment (%s%s): its topology is not in the report; calibrate from local clusters", cf.Addr, cf.URL)
	}
	var err error
	var up upArgs
	if up, err = deploymentOf(cf.UpArgs); err != nil {
		return c, err
	}
	c.Deployment, c.Link, c.Engine, c.KVCacheDType = up.d, up.link, up.eng, up.kvDType
	if c.Link == "" {
		c.Link = rep.Link
	}
	if c.Link != "" {
		c.Name += " --link " + c.Link
	}
	var res result
	var keys map[string]any
	if err := json.Unmarshal(cp.Result, &res); err != nil {
		return c, fmt.Errorf("result: %v", err)
	}
	if err := json.Unmarshal(cp.Result, &keys); err != nil {
		return c, fmt.Errorf("result: %v", err)
	}
	if len(res.InputLens) == 0 || len(res.InputLens) != len(res.OutputLens) {
		return c, errors.New("the result has no per-request input_lens and output_lens: run bench compare with --save-detailed")
	}
	blocks := runBlocks(res.RequestIDs, len(res.InputLens))
	fresh := freshBlocks(res.RequestIDs, blocks, slices.IndexFunc(rep.Configurations, func(x compare.Configuration) bool { return x.Name == cp.Name }), len(rep.Configurations))
	for i := range res.InputLens {
		if i < len(res.Errors) && res.Errors[i] != "" || res.OutputLens[i] < 1 {
			continue // a failed request: nothing to replay
		}
		r := simulator.Request{Input: res.InputLens[i], Output: res.OutputLens[i], Block: blocks[i]}
		if n := len(c.Workload.Requests); n == 0 || c.Workload.Requests[n-1].Block != r.Block {
			r.Restart = fresh[r.Block]
		}
		c.Workload.Requests = append(c.Workload.Requests, r)
	}
	if w := rep.Workload; w.DatasetName == "prefix_repetition" && w.PrefixRepetitionPrefixLen > 0 {
		// Which prefix each prompt had is not in the result: they are
		// dealt round-robin, as many prompts each as the bench's, and
		// each round has prefixes of its own (its prompts are drawn
		// from its own seed).
		k := max(1, w.PrefixRepetitionNumPrefixes)
		perRound := max(1, len(c.Workload.Requests)/max(1, rep.Rounds))
		for i := range c.Workload.Requests {
			if r := &c.Workload.Requests[i]; r.Input > w.PrefixRepetitionPrefixLen {
				r.Prefix, r.PrefixLen = 1+i%k+k*(i/perRound), w.PrefixRepetitionPrefixLen
			}
		}
	}
	c.Workload.MaxConcurrency = p.MaxConcurrency
	switch r := p.RequestRate.(type) {
	case float64:
		c.Workload.RequestRate = r
		c.Workload.Burstiness = rep.Workload.Burstiness
		c.Workload.Seed = rep.Workload.Seed
	case string:
		if r != "inf" {
			return c, fmt.Errorf("request rate %q", r)
		}
	}
	for _, k := range benchKeys {
		if v, ok := keys[k].(float64); ok {
			c.Measured[k] = v
		}
	}
	cost := cp.Cost
	for k, v := range map[string]compare.Num{"compute_ms_per_token": cost.Compute, "allreduce_ms_per_token": cost.Allreduce,
		"kv_transfer_ms_per_token": cost.KVTransfer, "sampling_ms_per_token": cost.Sampling} {
		if cost.Traced > 0 && !math.IsNaN(float64(v)) {
			c.Measured[k] = float64(v)
		}
	}
	return c, nil
}

// runBlocks numbers the bench runs a result merges, for each of its n
// requests: compare runs every round's halves (older reports: every
// round) as a run of its own, naming its requests with a prefix of the
// run's and their number in it (bench.Options.IDPrefix), so a
// new prefix is a new run. Without IDs the requests are one run.
func runBlocks(ids []string, n int) []int {
	out := make([]int, n)
	if len(ids) != n {
		return out
	}
	for i := 1; i < n; i++ {
		out[i] = out[i-1]
		if strings.TrimRight(ids[i], "0123456789") != strings.TrimRight(ids[i-1], "0123456789") {
			out[i]++
		}
	}
	return out
}

// runName is the round, half and load point in a compare run's request
// ID prefix (compare.runBlock's "RUN-CONFIG-rRhH-pP-").
var runName = regexp.MustCompile(`-r([0-9]+)h([0-9]+)-p([0-9]+)-$`)

// freshBlocks says, for each of a result's blocks (runBlocks), whether
// compare started the configuration's cluster afresh before it: it stops
// one configuration's cluster to start the next one's, and keeps it only
// where its schedule runs the same configuration twice in a row. Each
// round runs the configurations over the first half of its prompts in
// their order, then over the second half in reverse (A B B A), so a
// block is on a kept cluster when it is the first of its leg (a half of
// a round; a round where prompts are not halved, the rounds then
// alternating), the last configuration of the leg before. side is the
// configuration's place in the report's configurations, sides their
// number. A load point after the first (pP, P > 0) ran on the cluster
// the block's earlier points ran on, with the same prompts: never fresh
// (what those points left cached is not replayed). IDs that name no
// round and half (older reports, or none): fresh when another
// configuration may have run in between, that is whenever there are
// several.
func freshBlocks(ids []string, blocks []int, side, sides int) []bool {
	nb := 1
	if len(blocks) > 0 {
		nb = blocks[len(blocks)-1] + 1
	}
	fresh := make([]bool, nb)
	type run struct{ round, half, point int }
	runs := make([]*run, nb)
	halves := 1
	for i, id := range ids {
		if i >= len(blocks) || runs[blocks[i]] != nil {
			continue
		}
		m := runName.FindStringSubmatch(strings.TrimRight(id, "0123456789"))
		if m == nil {
			continue
		}
		r := &run{}
		r.round, _ = strconv.Atoi(m[1])
		r.half, _ = strconv.Atoi(m[2])
		r.point, _ = strconv.Atoi(m[3])
		runs[blocks[i]] = r
		if r.half > 0 {
			halves = 2
		}
	}
	for b, r := range runs {
		switch {
		case r == nil:
			fresh[b] = sides > 1
		case r.point > 0:
			fresh[b] = false
		default:
			leg := r.round*halves + r.half
			pos := side
			if leg%2 == 1 {
				pos = sides - 1 - side
			}
			fresh[b] = leg == 0 || pos != 0
		}
	}
	return fresh
}

// upArgs is what a case replays of a configuration's `tandem up` flags.
type upArgs struct {
	d             simulator.Deployment
	link, kvDType string
	eng           simulator.EngineOptions
}

// deploymentOf reads a local configuration's `tandem up` arguments.
func deploymentOf(args []string) (upArgs, error) {
	var up upArgs
	d := simulator.Deployment{Mode: simulator.ModeDisaggregated, Prefill: simulator.Pool{Groups: 1, TP: 2}, Decode: simulator.Pool{Groups: 1, TP: 2}}
	unified := simulator.Pool{Groups: 1, TP: 2}
	for i := 0; i < len(args); i++ {
		name, val, inline := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "--") {
			continue
		}
		if name == "no-prefix-caching" {
			up.eng.DisablePrefixCaching = val != "false"
			continue
		}
		if !inline {
			if i+1 >= len(args) {
				break
			}
			i++
			val = args[i]
		}
		n, numErr := strconv.Atoi(val)
		setInt := func(dst *int) error {
			if numErr != nil || n < 1 {
				return fmt.Errorf("tandem up --%s %q: want a positive number", name, val)
			}
			*dst = n
			return nil
		}
		var err error
		switch name {
		case "mode":
			d.Mode = val
		case "tp":
			err = setInt(&unified.TP)
		case "groups":
			err = setInt(&unified.Groups)
		case "prefill-tp":
			err = setInt(&d.Prefill.TP)
		case "decode-tp":
			err = setInt(&d.Decode.TP)
		case "prefill-groups":
			err = setInt(&d.Prefill.Groups)
		case "decode-groups":
			err = setInt(&d.Decode.Groups)
		case "link":
			up.link = val
		case "max-batch-tokens":
			err = setInt(&up.eng.MaxBatchTokens)
		case "threads":
			err = setInt(&up.eng.Threads)
		case "kv-cache-dtype":
			if _, err = costmodel.KVCacheDTypeBytes(val); err != nil {
				err = fmt.Errorf("tandem up --kv-cache-dtype: %w", err)
			}
			up.kvDType = val
		case "kv-cache-mb":
			return up, fmt.Errorf("tandem up --kv-cache-mb is not replayed yet")
		}
		if err != nil {
			return up, err
		}
	}
	if d.Mode == simulator.ModeUnified {
		d = simulator.Deployment{Mode: d.Mode, Unified: unified}
	}
	if d.Mode != simulator.ModeUnified && d.Mode != simulator.ModeDisaggregated {
		return up, fmt.Errorf("tandem up --mode %q", d.Mode)
	}
	up.d = d
	return up, nil
}

// model is a case's cost model on hw with eff (nil: the profile's priors).
func (c Case) model(hw costmodel.Hardware, eff *costmodel.Efficiency) (*costmodel.Model, error) {
	cfg, name, err := planner.LoadModel("", c.Model)
	if err != nil {
		if st, serr := os.Stat(c.Model); serr == nil && st.IsDir() {
			cfg, name, err = planner.LoadModel(c.Model, "")
		}
		if err != nil {
			return nil, err
		}
	}
	kv, err := costmodel.KVCacheDTypeBytes(c.KVCacheDType)
	if err != nil {
		return nil, err
	}
	shape, err := costmodel.NewShape(name, cfg, hw.Kind, costmodel.DTypes{KV: kv})
	if err != nil {
		return nil, err
	}
	linkName := c.Link
	if linkName == "" {
		linkName = "loopback"
	}
	link, err := costmodel.LinkByName(linkName)
	if err != nil {
		return nil, err
	}
	return costmodel.New(shape, hw, link, eff)
}
