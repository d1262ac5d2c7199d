package compare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tandemllm/tandem/apikey"
	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/dataset"
	"github.com/tandemllm/tandem/bench/local"
	"github.com/tandemllm/tandem/bench/serve"
	"github.com/tandemllm/tandem/bench/target/openai"
	"github.com/tandemllm/tandem/bench/target/tandem"
	"github.com/tandemllm/tandem/pki"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// Sample is one configuration's run of one load point in one round (its
// blocks' runs merged).
type Sample struct {
	Run    *bench.Run
	Result *bench.Result
	// Costs holds the cost of each completed request whose trace was
	// found; Missing counts the others.
	Costs   []Cost
	Missing int
}

// Side is one configuration and what it measured.
type Side struct {
	Configuration
	// Model is the model's shape and tokenizer, for analytic values.
	Model *serve.Model
	// Samples[point][round], a round's blocks merged.
	Samples [][]*Sample

	settings bench.Settings
	// target and traces serve a running deployment for the whole
	// comparison (a local cluster's are made at each start); traces is
	// nil where no trace source is known.
	target bench.Target
	traces tandemv1.TracesClient
	warm   bool // the side's target has had its warm-ups
}

// Traced says whether the side's requests are joined to server traces.
func (s *Side) Traced() bool { return s.URL == "" || s.TraceAddr != "" }

// local says whether the configuration is a cluster compare starts.
func (cf *Configuration) local() bool { return cf.Addr == "" && cf.URL == "" }

// AutoWarmups is the number of warm-up requests a load point gets when
// --num-warmups is not given: twice its concurrency limit, or 8 without
// one, so that every slot has served a request (connections made, pages
// touched, buffers sized) before the measured run.
func AutoWarmups(pt bench.Load) int {
	if pt.MaxConcurrency > 0 {
		return 2 * pt.MaxConcurrency
	}
	return 8
}

// Run is `tandem bench compare`: it checks every flag, every
// configuration (local ones by `tandem up --check`, targets reached,
// local topologies split the model) and builds the workload before any
// cluster starts or any load is sent, then runs the blocks of every
// round in schedule's order, starting and stopping each local cluster in
// its turn, and reports. When ctx ends (Ctrl-C, SIGTERM) or a block
// fails, it stops the cluster that runs and, if any block finished,
// still writes the report of what was measured, marked partial, and
// returns it with the error.
func Run(ctx context.Context, c Config, stdout, stderr io.Writer) (*Report, error) {
	plan, err := c.Plan()
	if err != nil {
		return nil, err
	}
	if c.Rounds == 0 {
		c.Rounds = 1
	}
	if c.Rounds < 1 {
		return nil, usage("--rounds %d: must be >= 1", c.Rounds)
	}
	if cf := c.confidence(); !(cf > 0 && cf < 1) {
		return nil, usage("--confidence %g: must be above 0 and below 1", cf)
	}
	cfgs, err := c.Configurations()
	if err != nil {
		return nil, err
	}
	if c.CACert != "" {
		if c.clientTLS, err = pki.ClientRoots(c.CACert, ""); err != nil {
			return nil, usage("--ca-cert: %v", err)
		}
	}
	sides, closeTargets, err := c.prepare(ctx, cfgs, plan.Settings)
	defer closeTargets()
	if err != nil {
		return nil, err
	}
	r := &runner{c: &c, plan: plan, id: serve.RunID()}
	if err := r.workloads(sides[0].Model.Tokenizer); err != nil {
		return nil, err
	}
	for _, s := range sides {
		s.settings.TokenizerID = sides[0].Model.ID
	}
	if !c.DisableProgress {
		r.progress = stderr
	}
	defer r.stopCluster()
	blocks := schedule(len(sides), c.Rounds, len(r.rounds[0]))
	var runErr error
	ran, complete := 0, 0
	for k, b := range blocks {
		s := sides[b.side]
		if r.progress != nil {
			fmt.Fprintf(r.progress, "round %d/%d, half %d/%d: %s\n", b.round+1, c.Rounds, b.half+1, b.halves, s.Name)
		}
		if err := r.runBlock(ctx, s, b); err != nil {
			runErr = fmt.Errorf("%s, round %d: %w", s.Name, b.round+1, err)
			break
		}
		ran++
		if k == len(blocks)-1 || blocks[k+1].round != b.round {
			complete = b.round + 1
		}
	}
	r.stopCluster()
	if runErr != nil && ran == 0 {
		return nil, runErr
	}
	rep := NewReport(c, plan, sides, complete)
	if runErr != nil {
		rep.Partial, rep.StoppedBy = true, runErr.Error()
		if ctx.Err() != nil {
			rep.StoppedBy = "interrupted in " + runErr.Error()
		}
		rep.BlocksRun = fmt.Sprintf("%d of %d", ran, len(blocks))
	}
	rep.WriteTable(stdout)
	if err := c.save(rep, stderr); err != nil {
		return rep, errors.Join(runErr, err)
	}
	if runErr != nil {
		return rep, fmt.Errorf("%w (partial report saved: %d of %d blocks)", runErr, ran, len(blocks))
	}
	return rep, nil
}

// block is one configuration's turn: one of the halves of the
// workload's prompts (or all of them, with halves 1) in one round.
type block struct {
	side, round, half, halves int
}

// schedule orders the blocks: each round runs every configuration on
// the first half of the prompts in the order given, then on the second
// half in the reverse order (A B B A for two), so that drift that is
// linear over a round costs every configuration the same, and no
// configuration is always first or last. A single prompt is not halved;
// its rounds alternate forward and reverse order instead.
func schedule(sides, rounds, prompts int) []block {
	halves := 2
	if prompts < 2 {
		halves = 1
	}
	var out []block
	for leg := range rounds * halves {
		for k := range sides {
			side := k
			if leg%2 == 1 {
				side = sides - 1 - k
			}
			out = append(out, block{side: side, round: leg / halves, half: leg % halves, halves: halves})
		}
	}
	return out
}

// prompts are the requests of half h of n halves.
func prompts(reqs []dataset.Request, h, n int) []dataset.Request {
	return reqs[h*len(reqs)/n : (h+1)*len(reqs)/n]
}

// runner runs a comparison's blocks, holding the local cluster that
// runs now (kept for the next block when that is the same
// configuration's).
type runner struct {
	c    *Config
	plan *serve.Plan
	// rounds[r] are round r's prompts, which every configuration gets;
	// warmup the warm-up prompts.
	rounds   [][]dataset.Request
	warmup   []dataset.Request
	id       string
	progress io.Writer
	cluster  *local.Cluster
	owner    *Side // whose cluster runs
	conn     *tandem.Target
}

func (r *runner) stopCluster() {
	if r.conn != nil {
		r.conn.Close()
	}
	if r.cluster != nil {
		r.cluster.Stop()
	}
	r.cluster, r.owner, r.conn = nil, nil, nil
}

// ready makes s's target ready to send, starting its local cluster
// unless it runs already, and says whether it needs warm-ups.
func (r *runner) ready(ctx context.Context, s *Side) (warmup bool, err error) {
	if !s.local() {
		r.stopCluster()
		return !s.warm, nil
	}
	if r.owner == s {
		return false, nil
	}
	r.stopCluster()
	var logs io.Writer
	if r.c.Verbose {
		logs = r.progress
	}
	cl, err := local.Start(ctx, local.Options{Executable: r.c.Executable, Args: s.UpArgs, Log: logs, ClientTLS: r.c.clientTLS})
	if err != nil {
		return false, err
	}
	r.cluster, r.owner = cl, s
	dial := r.c.dialOptions()
	if cl.TLS {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(r.c.clientTLS)))
	}
	if r.conn, err = tandem.New(cl.GRPC, "", dial...); err != nil {
		return false, err
	}
	served, err := r.conn.Model(ctx)
	if err != nil {
		return false, err
	}
	s.target, s.traces, s.settings.ModelID = r.conn, tandemv1.NewTracesClient(r.conn.Conn()), served
	return true, nil
}

// runBlock runs every load point of one block on s, with warm-ups first
// when its cluster is fresh, and files the runs under their round.
func (r *runner) runBlock(ctx context.Context, s *Side, b block) error {
	warmup, err := r.ready(ctx, s)
	if err != nil {
		return err
	}
	s.warm = true
	if len(s.Samples) == 0 {
		s.Samples = make([][]*Sample, len(r.plan.Points))
	}
	reqs := prompts(r.rounds[b.round], b.half, b.halves)
	for i, pt := range r.plan.Points {
		o := r.plan.Options(reqs, pt, fmt.Sprintf("%s-%s-r%dh%d-p%d-", r.id, s.Name, b.round, b.half, i), r.progress)
		o.Warmups, o.Warmup = 0, r.warmup
		if warmup {
			o.Warmups = r.warmups(pt)
		}
		run, err := bench.Execute(ctx, s.target, o)
		if err != nil {
			return err
		}
		smp := &Sample{Run: run}
		if s.traces != nil {
			smp.Costs, smp.Missing = costs(ctx, s.traces, run, s.Model, KVElementBytes(s.KVCacheDType))
		}
		if len(s.Samples[i]) <= b.round {
			s.Samples[i] = append(s.Samples[i], smp)
		} else {
			prev := s.Samples[i][b.round]
			prev.Run = bench.Merge(prev.Run, run)
			prev.Costs, prev.Missing = append(prev.Costs, smp.Costs...), prev.Missing+smp.Missing
			smp = prev
		}
		smp.Result = bench.Summarize(smp.Run, s.settings)
	}
	return nil
}

// workloads builds every round's prompts before any load: round r's
// from seed --seed + r, so that a deployment's prefix cache does not
// serve a later round what an earlier one sent (both sides of a round
// get the same prompts); the warm-ups' from the seed of the round after
// the last, so that they warm no measured prompt's prefix.
func (r *runner) workloads(tok dataset.Tokenizer) error {
	for round := range r.c.Rounds + 1 {
		p := *r.plan
		p.Seed += uint64(round)
		reqs, err := p.Requests(tok)
		if err != nil {
			return err
		}
		if round == r.c.Rounds {
			r.warmup = reqs
		} else {
			r.rounds = append(r.rounds, reqs)
		}
	}
	return nil
}

// warmups is the number of warm-up requests at load point pt.
func (r *runner) warmups(pt bench.Load) int {
	if r.c.WarmupsGiven {
		return r.c.NumWarmups
	}
	return AutoWarmups(pt)
}

// prepare checks every local configuration's flags with `tandem up
// --check`, then reaches every target (and trace source) and resolves
// each configuration's model and KV cache dtype, all before any cluster
// starts; the returned function closes what it opened.
func (c *Config) prepare(ctx context.Context, cfgs []Configuration, settings bench.Settings) ([]*Side, func(), error) {
	var closers []func()
	closeAll := func() {
		for _, f := range closers {
			f()
		}
	}
	if err := c.checkLocal(ctx, cfgs); err != nil {
		return nil, closeAll, err
	}
	var sides []*Side
	for _, cf := range cfgs {
		s := &Side{Configuration: cf}
		s.settings = settings
		s.settings.Backend, s.settings.Label = "tandem", cf.Name
		if cf.local() {
			m, err := serve.ResolveModel(cf.Model, "")
			if err != nil {
				return nil, closeAll, fmt.Errorf("configuration %s: %w", cf.Name, err)
			}
			s.Model = m
			if err := checkTopology([]Configuration{cf}, m.Config); err != nil {
				return nil, closeAll, err
			}
			if c.clientTLS == nil && servesTLS(cf.UpArgs) {
				return nil, closeAll, usage("configuration %s serves TLS (--tls-cert): give --ca-cert, the CA its certificate chains to", cf.Name)
			}
			s.KVCacheDType = cacheDType(cf.UpArgs, m.Config)
			sides = append(sides, s)
			continue
		}
		closeTarget, err := c.connect(ctx, s)
		closers = append(closers, closeTarget)
		if err != nil {
			return nil, closeAll, err
		}
		s.KVCacheDType = UnknownDType
		if c.KVCacheDType == "fp32" || c.KVCacheDType == "bf16" {
			s.KVCacheDType = c.KVCacheDType
		}
		sides = append(sides, s)
	}
	return sides, closeAll, nil
}

// servesTLS says whether `tandem up ARGS` serves its public listeners
// over TLS.
func servesTLS(args []string) bool {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "--") && (name == "tls-cert" || name == "ssl-certfile") {
			return true
		}
	}
	return false
}

// connect reaches a running deployment's target and trace source,
// before any load, and resolves its model; the returned function closes
// what it opened.
func (c *Config) connect(ctx context.Context, s *Side) (func(), error) {
	var closers []func()
	closeAll := func() {
		for _, f := range closers {
			f()
		}
	}
	if s.URL != "" {
		t, err := openai.New(openai.Options{BaseURL: s.URL, Endpoint: c.Endpoint, APIKey: c.apiKey("OPENAI_API_KEY", "TANDEM_API_KEY"), TLS: c.clientTLS})
		if err != nil {
			return closeAll, usage("--target %s: %v", s.Name, err)
		}
		closers = append(closers, func() { t.Close() })
		s.target, s.settings.Backend = t, "openai"
		if c.Endpoint == openai.ChatCompletions {
			s.settings.Backend = "openai-chat"
		}
	} else {
		t, err := tandem.New(s.Addr, "", c.dialOptions()...)
		if err != nil {
			return closeAll, usage("--target %s: %v", s.Name, err)
		}
		closers = append(closers, func() { t.Close() })
		s.target, s.traces = t, tandemv1.NewTracesClient(t.Conn())
	}
	served, err := s.target.Model(ctx)
	if err != nil {
		return closeAll, fmt.Errorf("--target %s: %w", s.Name, err)
	}
	if s.TraceAddr != "" {
		t, err := tandem.New(s.TraceAddr, "", c.dialOptions()...)
		if err != nil {
			return closeAll, usage("--trace-addr %s: %v", s.Name, err)
		}
		closers = append(closers, func() { t.Close() })
		if _, err := t.Model(ctx); err != nil {
			return closeAll, fmt.Errorf("--trace-addr %s: unreachable: %w", s.Name, err)
		}
		s.traces = tandemv1.NewTracesClient(t.Conn())
	}
	s.settings.ModelID = served
	s.Model, err = serve.ResolveModel(c.Tokenizer, served)
	return closeAll, err
}

// apiKey is the key to send: APIKey, else the first of the environment
// variables set.
func (c *Config) apiKey(env ...string) string {
	if c.APIKey != "" {
		return c.APIKey
	}
	for _, e := range env {
		if k := os.Getenv(e); k != "" {
			return k
		}
	}
	return ""
}

// dialOptions send the API key, if any, with every gRPC call.
func (c *Config) dialOptions() []grpc.DialOption {
	if key := c.apiKey("TANDEM_API_KEY"); key != "" {
		return []grpc.DialOption{grpc.WithPerRPCCredentials(apikey.PerRPC(key))}
	}
	return nil
}

// checkLocal runs `tandem up ARGS --check` for every local
// configuration: tandem up's own parsing and checks of its flags (the
// --link profile and the root it needs included), with nothing started.
func (c *Config) checkLocal(ctx context.Context, cfgs []Configuration) error {
	if !slices.ContainsFunc(cfgs, func(cf Configuration) bool { return cf.local() }) {
		return nil
	}
	if c.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.Executable = exe
	}
	if _, err := os.Stat(c.Executable); err != nil {
		return fmt.Errorf("the tandem binary for local clusters: %w", err)
	}
	for _, cf := range cfgs {
		if !cf.local() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := exec.CommandContext(cctx, c.Executable, append(append([]string{"up"}, cf.UpArgs...), "--check")...).CombinedOutput()
		cancel()
		if err == nil {
			continue
		}
		msg := strings.TrimSpace(string(out))
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = msg[i+1:]
		}
		msg = strings.TrimPrefix(msg, "tandem: ")
		if ctx.Err() != nil || msg == "" {
			msg = err.Error()
		}
		if cf.file != "" {
			return usage("--config %s: tandem up refuses its flags (%s): %s", cf.file, strings.Join(cf.UpArgs, " "), msg)
		}
		return usage("configuration %s: tandem up %s: %s", cf.Name, strings.Join(cf.UpArgs, " "), msg)
	}
	return nil
}

// costs fetches the trace of every completed request of run (four at a
// time) and computes its cost; it returns the costs in workload order
// and the number of traces not found.
func costs(ctx context.Context, traces tandemv1.TracesClient, run *bench.Run, m *serve.Model, kvElem float64) ([]Cost, int) {
	out := make([]*Cost, len(run.Outputs))
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		missing int
	)
	work := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				resp, err := traces.GetTrace(cctx, &tandemv1.GetTraceRequest{RequestId: run.Outputs[i].RequestID})
				cancel()
				if err != nil { // evicted, or the coordinator is gone: counted
					mu.Lock()
					missing++
					mu.Unlock()
					continue
				}
				c := RequestCost(resp.GetTrace(), m.Config, kvElem)
				out[i] = &c
			}
		}()
	}
	for i, o := range run.Outputs {
		if o.Success {
			select {
			case work <- i:
			case <-ctx.Done():
			}
		}
	}
	close(work)
	wg.Wait()
	var cs []Cost
	for _, c := range out {
		if c != nil {
			cs = append(cs, *c)
		}
	}
	return cs, missing
}
