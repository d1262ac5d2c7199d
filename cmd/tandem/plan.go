package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/costmodel"
	"github.com/tandemllm/tandem/planner"
	"github.com/tandemllm/tandem/simulator"
)

// planFlags are the flags of `tandem plan`.
type planFlags struct {
	modelDir, preset, hardware, link string
	gpus, nodes                      int
	inputLen, outputLen, numPrompts  int
	rangeRatio, requestRate, burst   float64
	maxConcurrency                   int
	goodput                          []string
	seed                             uint64
	mode                             string
	tps                              []int
	maxBatchTokens, kvCacheMB        int
	threads, prefixLen, numPrefixes  int
	noPrefixCaching                  bool
	kvCacheDType                     string
	calibration                      string
	top                              int
	jsonOut                          bool
}

func newPlanCmd() *cobra.Command {
	var f planFlags
	cmd := &cobra.Command{
		Use:   "plan --model DIR|--preset NAME --hardware NAME --gpus N --input-len N --output-len N --request-rate R|--max-concurrency C",
		Short: "Rank deployments (TP per role, prefill/decode split, unified or not) by predicted goodput per GPU",
		Long: `plan simulates every deployment of the model on at most --gpus devices —
unified groups, or prefill and decode groups, of every TP degree the model
splits over — under the workload and SLOs given, with a cost model of each
step (weights and KV bytes against memory bandwidth, FLOPs against peak
compute, NCCL's allreduce model, KV transfer over the link) and the
engine's own scheduling rules, ranks them by goodput per GPU, and prints
the table and the winner's Helm values. Efficiency factors are the
hardware profile's priors unless --calibration gives fitted ones
("tandem plan calibrate"). Hardware: ` + strings.Join(hardwareNames(), ", ") + `; links: ` + strings.Join(linkNames(), ", ") + `.`,
		Example: `  tandem plan --preset Llama-3.1-8B --hardware h100-sxm --gpus 8 --input-len 1024 --output-len 128 \
      --request-rate 20 --goodput ttft:500 tpot:50
  tandem plan --model ./llama --hardware h200 --gpus 16 --nodes 2 --link ib-400g --max-concurrency 64 --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.takeGoodputArgs(cmd, args); err != nil {
				return err
			}
			return runPlan(cmd, &f)
		},
	}
	cmd.AddCommand(newPlanCalibrateCmd(), newPlanValidateCmd())
	fl := cmd.Flags()
	fl.StringVar(&f.modelDir, "model", "", "model directory (or its config.json): only the shape is read")
	fl.StringVar(&f.preset, "preset", "", "a preset or public shape instead of --model ("+strings.Join(planner.PublicShapes(), ", ")+", or a tandem model preset)")
	fl.StringVar(&f.hardware, "hardware", "", "hardware profile: "+strings.Join(hardwareNames(), ", "))
	fl.IntVar(&f.gpus, "gpus", 0, "most devices a deployment may use (on cpu: ranks)")
	fl.IntVar(&f.nodes, "nodes", 0, "nodes the GPUs sit in (default: as few as hold them)")
	fl.StringVar(&f.link, "link", "", "link between nodes (on cpu: between ranks, as tandem up --link); default ib-400g, on cpu loopback")
	fl.IntVar(&f.inputLen, "input-len", 0, "prompt tokens per request")
	fl.IntVar(&f.outputLen, "output-len", 0, "output tokens per request")
	fl.Float64Var(&f.rangeRatio, "random-range-ratio", 0, "lengths uniform in [len·(1−r), len·(1+r)], as vllm bench serve")
	fl.IntVar(&f.numPrompts, "num-prompts", 1000, "requests simulated per deployment")
	fl.Float64Var(&f.requestRate, "request-rate", math.Inf(1), "Poisson arrival rate in requests/s (inf: all at once)")
	fl.Float64Var(&f.burst, "burstiness", 1, "gamma shape of the arrival gaps (1: Poisson)")
	fl.IntVar(&f.maxConcurrency, "max-concurrency", 0, "most requests in flight (0: no bound)")
	fl.StringSliceVar(&f.goodput, "goodput", nil, "SLOs for goodput, as vllm bench serve: ttft:MS tpot:MS e2el:MS")
	fl.Uint64Var(&f.seed, "seed", 0, "seed of the lengths and arrivals")
	fl.StringVar(&f.mode, "mode", "all", "deployments to consider: unified, disaggregated or all")
	fl.IntSliceVar(&f.tps, "tp", nil, "TP degrees to consider (default: every degree the model splits over)")
	fl.IntVar(&f.maxBatchTokens, "max-batch-tokens", 512, "rows per step and prefill chunk, as the worker's flag")
	fl.IntVar(&f.kvCacheMB, "kv-cache-mb", 0, "KV cache per rank in MiB (default: the worker's 512 on cpu, memory left after weights on GPUs)")
	fl.StringVar(&f.kvCacheDType, "kv-cache-dtype", "auto", "KV cache element type, as the worker's flag: auto (bf16 on GPUs; on cpu the weights' dtype), fp32, bf16 or fp16")
	fl.IntVar(&f.prefixLen, "prefix-len", 0, "tokens of a shared prefix before each prompt's --input-len, as vllm bench serve's --random-prefix-len (prefix caching then skips it where a group holds it)")
	fl.IntVar(&f.numPrefixes, "num-prefixes", 1, "distinct shared prefixes, each used by as many prompts (with --prefix-len; as --prefix-repetition-num-prefixes)")
	fl.BoolVar(&f.noPrefixCaching, "no-prefix-caching", false, "the workers' flag: every prompt computes its prefix")
	fl.IntVar(&f.threads, "threads", 0, "cpu: each rank's threads, as the worker's flag (default as tandem up: the machine's cores over all ranks)")
	fl.StringVar(&f.calibration, "calibration", "", "efficiency factors fitted by tandem plan calibrate (JSON)")
	fl.IntVar(&f.top, "top", 10, "deployments shown in the table (0: all)")
	fl.BoolVar(&f.jsonOut, "json", false, "print one JSON object instead of the table")
	return cmd
}

var goodputArg = regexp.MustCompile(`^[a-z0-9]+:[^:]+$`)

// takeGoodputArgs lets `--goodput ttft:500 tpot:50` (vLLM's spelling,
// values separated by spaces) work: words after --goodput that look like
// KEY:MS join it; anything else is an error.
func (f *planFlags) takeGoodputArgs(cmd *cobra.Command, args []string) error {
	for _, a := range args {
		if !cmd.Flags().Changed("goodput") || !goodputArg.MatchString(a) {
			return fmt.Errorf("unexpected argument %q (SLOs go after --goodput, as ttft:MS tpot:MS e2el:MS)", a)
		}
		f.goodput = append(f.goodput, a)
	}
	return nil
}

func hardwareNames() []string {
	var out []string
	for _, h := range costmodel.Hardwares() {
		out = append(out, h.Name)
	}
	return out
}

func linkNames() []string {
	var out []string
	for _, l := range costmodel.Links() {
		out = append(out, l.Name)
	}
	return out
}

// parseGoodput reads vLLM's --goodput KEY:MS pairs into an SLO.
func parseGoodput(pairs []string) (simulator.SLO, error) {
	var slo simulator.SLO
	for _, p := range pairs {
		key, val, ok := strings.Cut(p, ":")
		ms, err := strconv.ParseFloat(val, 64)
		if !ok || err != nil || ms <= 0 || math.IsInf(ms, 0) {
			return slo, fmt.Errorf("--goodput %q: want KEY:MS with a positive number of milliseconds", p)
		}
		switch strings.ToLower(key) {
		case "ttft":
			slo.TTFT = ms / 1e3
		case "tpot":
			slo.TPOT = ms / 1e3
		case "e2el":
			slo.E2EL = ms / 1e3
		default:
			return slo, fmt.Errorf("--goodput %q: unknown key %q (want ttft, tpot or e2el)", p, key)
		}
	}
	return slo, nil
}

// planSetup is what the flags resolve to.
type planSetup struct {
	cost     *costmodel.Model
	opts     planner.Options
	calFile  string
	kvBytes  float64
	nodes    int
	linkName string
}

// setup checks the flags and builds the cost model and planner options;
// every error names its flag.
func (f *planFlags) setup() (*planSetup, error) {
	if (f.modelDir == "") == (f.preset == "") {
		return nil, fmt.Errorf("give one of --model DIR or --preset NAME")
	}
	cfg, name, err := planner.LoadModel(f.modelDir, f.preset)
	if err != nil {
		if f.modelDir != "" {
			return nil, fmt.Errorf("--model %s: %w", f.modelDir, err)
		}
		return nil, fmt.Errorf("--preset %s: %w", f.preset, err)
	}
	if f.hardware == "" {
		return nil, fmt.Errorf("--hardware is required (one of %s)", strings.Join(hardwareNames(), ", "))
	}
	hw, err := costmodel.HardwareByName(f.hardware)
	if err != nil {
		return nil, fmt.Errorf("--hardware: %w", err)
	}
	if f.gpus < 1 {
		return nil, fmt.Errorf("--gpus %d: want at least 1", f.gpus)
	}
	nodes, err := f.placeNodes(&hw)
	if err != nil {
		return nil, err
	}
	linkName := f.link
	if linkName == "" {
		linkName = "ib-400g"
		if hw.Kind == costmodel.KindCPU {
			linkName = "loopback"
		}
	}
	link, err := costmodel.LinkByName(linkName)
	if err != nil {
		return nil, fmt.Errorf("--link: %w", err)
	}
	kvBytes, err := costmodel.KVCacheDTypeBytes(f.kvCacheDType)
	if err != nil {
		return nil, fmt.Errorf("--kv-cache-dtype: %w", err)
	}
	shape, err := costmodel.NewShape(name, cfg, hw.Kind, costmodel.DTypes{KV: kvBytes})
	if err != nil {
		return nil, err
	}
	var eff *costmodel.Efficiency
	if f.calibration != "" {
		cal, err := costmodel.LoadCalibration(f.calibration)
		if err != nil {
			return nil, fmt.Errorf("--calibration: %w", err)
		}
		if !strings.EqualFold(cal.Hardware, hw.Name) {
			return nil, fmt.Errorf("--calibration %s was fitted on %s, not --hardware %s", f.calibration, cal.Hardware, hw.Name)
		}
		eff = &cal.Efficiency
	}
	cost, err := costmodel.New(shape, hw, link, eff)
	if err != nil {
		return nil, err
	}
	wl, slo, err := f.workload()
	if err != nil {
		return nil, err
	}
	modes, err := f.modes()
	if err != nil {
		return nil, err
	}
	for _, tp := range f.tps {
		if tp < 1 {
			return nil, fmt.Errorf("--tp %d: want at least 1", tp)
		}
	}
	if f.maxBatchTokens < 1 || f.kvCacheMB < 0 || f.threads < 0 {
		return nil, fmt.Errorf("--max-batch-tokens must be at least 1, --kv-cache-mb and --threads not negative")
	}
	kv := float64(f.kvCacheMB) * (1 << 20)
	return &planSetup{
		cost: cost, calFile: f.calibration, kvBytes: kv, nodes: nodes, linkName: link.Name,
		opts: planner.Options{Cost: cost, GPUs: f.gpus, Nodes: nodes, Modes: modes, TPs: f.tps,
			Engine: simulator.EngineOptions{MaxBatchTokens: f.maxBatchTokens, Threads: f.threads, DisablePrefixCaching: f.noPrefixCaching}, Workload: wl, SLO: slo, KVCacheBytes: kv},
	}, nil
}

// placeNodes checks --nodes and sets the devices per node it implies.
func (f *planFlags) placeNodes(hw *costmodel.Hardware) (int, error) {
	if hw.Shared {
		if f.nodes > 1 {
			return 0, fmt.Errorf("--nodes %d: the %s profile is one machine whose ranks share its cores", f.nodes, hw.Name)
		}
		return 1, nil
	}
	nodes := f.nodes
	if nodes == 0 {
		nodes = (f.gpus + hw.GPUsPerNode - 1) / hw.GPUsPerNode
	}
	if nodes < 1 || f.gpus%nodes != 0 {
		return 0, fmt.Errorf("--nodes %d: want a positive number that divides --gpus %d", nodes, f.gpus)
	}
	if per := f.gpus / nodes; per > hw.GPUsPerNode {
		return 0, fmt.Errorf("--nodes %d: %d GPUs per node, more than a %s node's %d", nodes, per, hw.Name, hw.GPUsPerNode)
	} else {
		hw.GPUsPerNode = per
	}
	return nodes, nil
}

func (f *planFlags) workload() (simulator.Workload, simulator.SLO, error) {
	var wl simulator.Workload
	switch {
	case f.inputLen < 1:
		return wl, simulator.SLO{}, fmt.Errorf("--input-len %d: want at least 1 token", f.inputLen)
	case f.outputLen < 1:
		return wl, simulator.SLO{}, fmt.Errorf("--output-len %d: want at least 1 token", f.outputLen)
	case f.numPrompts < 1:
		return wl, simulator.SLO{}, fmt.Errorf("--num-prompts %d: want at least 1", f.numPrompts)
	case f.rangeRatio < 0 || f.rangeRatio >= 1:
		return wl, simulator.SLO{}, fmt.Errorf("--random-range-ratio %g: want 0 <= r < 1", f.rangeRatio)
	case !(f.requestRate > 0):
		return wl, simulator.SLO{}, fmt.Errorf("--request-rate %g: want a positive rate or inf", f.requestRate)
	case !(f.burst > 0) || math.IsInf(f.burst, 0):
		return wl, simulator.SLO{}, fmt.Errorf("--burstiness %g: want a positive number", f.burst)
	case f.maxConcurrency < 0:
		return wl, simulator.SLO{}, fmt.Errorf("--max-concurrency %d: want 0 (no bound) or more", f.maxConcurrency)
	case f.prefixLen < 0:
		return wl, simulator.SLO{}, fmt.Errorf("--prefix-len %d: want 0 (no shared prefix) or more tokens", f.prefixLen)
	case f.numPrefixes < 1 || f.numPrefixes > f.numPrompts:
		return wl, simulator.SLO{}, fmt.Errorf("--num-prefixes %d: want 1 to --num-prompts (%d)", f.numPrefixes, f.numPrompts)
	}
	slo, err := parseGoodput(f.goodput)
	wl = simulator.Workload{NumPrompts: f.numPrompts, InputLen: f.inputLen, OutputLen: f.outputLen, RangeRatio: f.rangeRatio,
		RequestRate: f.requestRate, Burstiness: f.burst, MaxConcurrency: f.maxConcurrency, Seed: f.seed,
		PrefixLen: f.prefixLen, NumPrefixes: f.numPrefixes}
	return wl, slo, err
}

func (f *planFlags) modes() ([]string, error) {
	switch f.mode {
	case "all":
		return nil, nil
	case simulator.ModeUnified, simulator.ModeDisaggregated:
		return []string{f.mode}, nil
	}
	return nil, fmt.Errorf("--mode %q: want unified, disaggregated or all", f.mode)
}

func runPlan(cmd *cobra.Command, f *planFlags) error {
	s, err := f.setup()
	if err != nil {
		return err
	}
	s.opts.Progress = progressPrinter(cmd.ErrOrStderr(), "plan: simulated")
	cands, err := planner.Plan(cmd.Context(), s.opts)
	if err != nil {
		return err
	}
	var values strings.Builder
	if err := planner.HelmValues(&values, cands[0].Deployment, s.cost, s.opts.Engine, s.kvBytes, f.kvCacheDType); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if f.jsonOut {
		return writePlanJSON(out, s, cands, values.String())
	}
	fmt.Fprintln(out, s.describe())
	if err := planner.WriteTable(out, cands, f.top); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nWinner: %s (%d GPUs). Helm values for deploy/helm/tandem:\n\n%s", cands[0].Deployment, cands[0].Deployment.GPUs(), values.String())
	return nil
}

// describe is the heading of the table: what was planned for, and with
// which efficiency factors.
func (s *planSetup) describe() string {
	m, o := s.cost, s.opts
	var b strings.Builder
	fmt.Fprintf(&b, "%s on up to %d × %s (%d node(s); %s within, %s between), ", m.Shape.Name, o.GPUs, m.HW.Name, s.nodes, m.Intra.Name, s.linkName)
	w := o.Workload
	fmt.Fprintf(&b, "%d requests of %d→%d tokens", w.NumPrompts, w.PrefixLen+w.InputLen, w.OutputLen)
	if w.PrefixLen > 0 {
		fmt.Fprintf(&b, " (%d of them one of %d shared prefixes", w.PrefixLen, w.NumPrefixes)
		if o.Engine.DisablePrefixCaching {
			b.WriteString(", no prefix caching")
		}
		b.WriteString(")")
	}
	if !math.IsInf(w.RequestRate, 1) {
		fmt.Fprintf(&b, " at %g req/s", w.RequestRate)
	}
	if w.MaxConcurrency > 0 {
		fmt.Fprintf(&b, ", at most %d in flight", w.MaxConcurrency)
	}
	var slo []string
	for _, x := range []struct {
		k string
		v float64
	}{{"ttft", o.SLO.TTFT}, {"tpot", o.SLO.TPOT}, {"e2el", o.SLO.E2EL}} {
		if x.v > 0 {
			slo = append(slo, fmt.Sprintf("%s ≤ %g ms", x.k, x.v*1e3))
		}
	}
	if len(slo) > 0 {
		fmt.Fprintf(&b, "; SLO %s", strings.Join(slo, ", "))
	} else {
		b.WriteString("; no SLO (goodput = throughput)")
	}
	if s.calFile != "" {
		fmt.Fprintf(&b, "\nefficiency: calibrated (%s)", s.calFile)
	} else {
		b.WriteString("\nefficiency: the profile's priors (uncalibrated; see tandem plan calibrate)")
	}
	b.WriteString("\n")
	return b.String()
}

// progressPrinter reports "done/total" on w: in place on a terminal,
// at every tenth otherwise.
func progressPrinter(w io.Writer, what string) func(done, total int) {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return func(done, total int) {
		switch {
		case tty:
			fmt.Fprintf(w, "\r%s %d/%d", what, done, total)
			if done == total {
				fmt.Fprintln(w)
			}
		case done == total || done%max(1, total/10) == 0:
			fmt.Fprintf(w, "%s %d/%d\n", what, done, total)
		}
	}
}

// planJSON is `tandem plan --json`.
type planJSON struct {
	Model       string               `json:"model"`
	Hardware    costmodel.Hardware   `json:"hardware"`
	Intra       costmodel.Link       `json:"intra_node_link"`
	Link        costmodel.Link       `json:"link"`
	GPUs        int                  `json:"gpus"`
	Nodes       int                  `json:"nodes"`
	Workload    map[string]any       `json:"workload"`
	SLO         map[string]float64   `json:"goodput_slo_ms"`
	Efficiency  costmodel.Efficiency `json:"efficiency"`
	Calibration string               `json:"calibration,omitempty"`
	Deployments []candidateJSON      `json:"deployments"`
	Winner      simulator.Deployment `json:"winner"`
	HelmValues  string               `json:"helm_values"`
}

type candidateJSON struct {
	planner.Candidate
	GPUs    int                `json:"gpus"`
	Metrics map[string]float64 `json:"metrics,omitempty"`
	PartsMs map[string]float64 `json:"per_token_ms,omitempty"`
}

func writePlanJSON(w io.Writer, s *planSetup, cands []planner.Candidate, values string) error {
	m, o := s.cost, s.opts
	wl := o.Workload
	rate := any(wl.RequestRate)
	if math.IsInf(wl.RequestRate, 1) {
		rate = "inf"
	}
	j := planJSON{
		Model: m.Shape.Name, Hardware: m.HW, Intra: m.Intra, Link: m.Inter, GPUs: o.GPUs, Nodes: s.nodes,
		Workload: map[string]any{"num_prompts": wl.NumPrompts, "input_len": wl.InputLen, "output_len": wl.OutputLen,
			"random_range_ratio": wl.RangeRatio, "request_rate": rate, "burstiness": wl.Burstiness,
			"max_concurrency": wl.MaxConcurrency, "seed": wl.Seed, "prefix_len": wl.PrefixLen, "num_prefixes": wl.NumPrefixes},
		SLO:        map[string]float64{},
		Efficiency: m.Eff, Calibration: s.calFile, Winner: cands[0].Deployment, HelmValues: values,
	}
	for k, v := range map[string]float64{"ttft": o.SLO.TTFT, "tpot": o.SLO.TPOT, "e2el": o.SLO.E2EL} {
		if v > 0 {
			j.SLO[k] = v * 1e3
		}
	}
	for _, c := range cands {
		cj := candidateJSON{Candidate: c, GPUs: c.Deployment.GPUs()}
		if r := c.Result; r != nil {
			cj.Metrics = r.Metrics([]float64{50, 90, 95, 99})
			p := r.Parts
			cj.PartsMs = map[string]float64{"compute": p.Compute * 1e3, "allreduce": p.Allreduce * 1e3,
				"sampling": p.Sampling * 1e3, "kv_transfer": p.KVTransfer * 1e3, "queue": p.Queue * 1e3}
		}
		j.Deployments = append(j.Deployments, cj)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(j)
}
