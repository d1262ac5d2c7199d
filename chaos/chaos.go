package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/dataset"
	"github.com/tandemllm/tandem/bench/target/tandem"
	"github.com/tandemllm/tandem/model/tokenizer"
	"github.com/tandemllm/tandem/worker/supervisor"
)

// Options configure Run. Zero fields take the documented defaults.
type Options struct {
	// Binary is the tandem binary the processes run; ModelDir the model
	// they serve, under ModelName. Dir holds etcd's data. Required.
	Binary, ModelDir, ModelName, Dir string
	// PrefillTP and DecodeTP give each prefill and decode group its TP
	// degree (default {1, 2} and {2, 2}: two groups of each role, so one
	// of each can die while the other serves).
	PrefillTP, DecodeTP []int
	// Requests is the load's size (default 200), sent at RequestRate per
	// second (default 10, Poisson) with at most MaxConcurrency in flight
	// (default 32); prompts of InputLen tokens (default 32) ask for
	// OutputLen tokens (default 16) each.
	Requests            int
	RequestRate         float64
	MaxConcurrency      int
	InputLen, OutputLen int
	// RequestTimeout is a request's deadline: one without an answer by
	// then is hung (default 60s).
	RequestTimeout time.Duration
	// Faults is how many faults to inject (default 6), cycling through
	// Kinds (default AllKinds) in a seeded order; the schedule stops early
	// if the load ends first. Gap is the pause between a recovery and the
	// next fault (default 1s, jittered by up to half of it).
	Faults int
	Kinds  []Kind
	Gap    time.Duration
	// RecoveryTimeout bounds the wait for the cluster to recover after a
	// fault (default 2 min).
	RecoveryTimeout time.Duration
	// RestartBackoff, CrashLoopWindow and CrashLoopLimit are the groups'
	// supervision (default: worker/supervisor's, as `tandem up` ships
	// them, so the run shows what a user's cluster does).
	RestartBackoff  time.Duration
	CrashLoopWindow time.Duration
	CrashLoopLimit  int
	// EtcdMembers is the size of the embedded etcd (default 3: one can
	// be lost, once per run, leaving a quorum).
	EtcdMembers int
	// KVCacheMB is each rank's KV budget (default 64); MaxInFlight the
	// coordinator's admission bound (default 256).
	KVCacheMB, MaxInFlight int
	// ReadyTimeout bounds the cluster's start (default 3 min).
	ReadyTimeout time.Duration
	// Seed makes the prompts, arrivals and faults (their kinds, order
	// and targets) reproducible; the report carries it, to replay a run.
	Seed uint64
	// Progress receives a line per fault and per phase (default none);
	// Log every process's output and the supervisors' logs (default
	// none).
	Progress, Log io.Writer
}

func (o *Options) defaults() error {
	if o.Binary == "" || o.ModelDir == "" || o.ModelName == "" || o.Dir == "" {
		return errors.New("chaos: Options.Binary, ModelDir, ModelName and Dir are required")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if len(o.PrefillTP) == 0 {
		o.PrefillTP = []int{1, 2}
	}
	if len(o.DecodeTP) == 0 {
		o.DecodeTP = []int{2, 2}
	}
	def(&o.Requests, 200)
	if o.RequestRate <= 0 {
		o.RequestRate = 10
	}
	def(&o.MaxConcurrency, 32)
	def(&o.InputLen, 32)
	def(&o.OutputLen, 16)
	defDur(&o.RequestTimeout, time.Minute)
	def(&o.Faults, 6)
	if len(o.Kinds) == 0 {
		o.Kinds = AllKinds()
	}
	defDur(&o.Gap, time.Second)
	defDur(&o.RecoveryTimeout, 2*time.Minute)
	defDur(&o.RestartBackoff, supervisor.DefaultBackoff)
	defDur(&o.CrashLoopWindow, supervisor.DefaultCrashLoopWindow)
	def(&o.CrashLoopLimit, supervisor.DefaultCrashLoopLimit)
	def(&o.EtcdMembers, 3)
	def(&o.KVCacheMB, 64)
	def(&o.MaxInFlight, 256)
	defDur(&o.ReadyTimeout, 3*time.Minute)
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return nil
}

// Run starts the cluster, runs the load and the fault schedule, and
// reports. Everything it started is stopped before it returns, whatever
// the outcome; the error is for a run that could not be made, not for
// what the run found (that is the report's).
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(filepath.Join(o.ModelDir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	workload, err := dataset.Random(tok, dataset.RandomOptions{InputLen: o.InputLen, OutputLen: o.OutputLen, Num: o.Requests, Seed: o.Seed})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "chaos: starting %d prefill and %d decode groups ...\n", len(o.PrefillTP), len(o.DecodeTP))
	sys, err := startSystem(ctx, &o)
	if err != nil {
		return nil, err
	}
	defer sys.stop()
	target, err := tandem.New(sys.grpc, o.ModelName)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	rec := newRecordingTarget(target, o.RequestTimeout)

	mctx, stopMonitor := context.WithCancel(ctx)
	mon := &monitor{health: sys.health}
	monDone := make(chan struct{})
	go func() { defer close(monDone); mon.run(mctx, 100*time.Millisecond) }()
	defer func() { stopMonitor(); <-monDone }()

	fmt.Fprintf(o.Progress, "chaos: %d requests at %.0f/s, %d faults, seed %d\n", o.Requests, o.RequestRate, o.Faults, o.Seed)
	loaded := make(chan loadResult, 1)
	go func() {
		run, err := bench.Execute(ctx, rec, bench.Options{Workload: workload, Load: bench.Load{RequestRate: o.RequestRate, MaxConcurrency: o.MaxConcurrency},
			IgnoreEOS: true, Seed: o.Seed, IDPrefix: "chaos-"})
		loaded <- loadResult{run, err}
	}()
	r := newReport()
	r.Seed, r.FaultsScheduled = o.Seed, o.Faults
	r.Supervision = Supervision{BackoffSeconds: o.RestartBackoff.Seconds(), CrashLoopWindowSeconds: o.CrashLoopWindow.Seconds(), CrashLoopLimit: o.CrashLoopLimit}
	res := sys.schedule(ctx, r, target, loaded)
	if res.err != nil {
		return nil, fmt.Errorf("chaos: the load: %w", res.err)
	}
	r.DurationSeconds = seconds(res.run.Duration)
	classify(r, res.run, rec, mon)
	down, unservable := mon.outages()
	r.CoordinatorDownSeconds, r.UnservableSeconds = seconds(down), seconds(unservable)
	r.summarize()
	// Every request has ended: each group's blocks must come free.
	fmt.Fprintln(o.Progress, "chaos: load done; waiting for every KV block to be free ...")
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.KVBlocks, r.AllBlocksFree = sys.kvBlocks(ctx)
		if r.AllBlocksFree || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	r.judge()
	return r, nil
}

// loadResult is the load's end.
type loadResult struct {
	run *bench.Run
	err error
}

// schedule injects o.Faults faults while the load runs, one at a time,
// each after the cluster recovered from the last and a gap; it returns
// the load's result once the load ends.
func (s *system) schedule(ctx context.Context, r *Report, probe bench.Target, loaded <-chan loadResult) loadResult {
	rng := rand.New(rand.NewPCG(s.opts.Seed, 0x6368616f73))
	kinds := append([]Kind(nil), s.opts.Kinds...)
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	etcdLost := false
	next := 0
	for i := 0; i < s.opts.Faults; i++ {
		gap := s.opts.Gap + time.Duration(rng.Int64N(int64(s.opts.Gap)/2+1))
		t := time.NewTimer(gap)
		select {
		case res := <-loaded:
			t.Stop()
			fmt.Fprintf(s.opts.Progress, "chaos: the load ended after %d of %d faults\n", i, s.opts.Faults)
			return res
		case <-t.C:
		}
		k := kinds[next%len(kinds)]
		next++
		// Losing a second member would lose the quorum: etcd goes once.
		if k == KillEtcdMember && (etcdLost || s.opts.EtcdMembers < 3) {
			k = kinds[next%len(kinds)]
			next++
		}
		etcdLost = etcdLost || k == KillEtcdMember
		began := time.Now()
		in, err := s.inject(k, rng)
		f := FaultRecord{Kind: k, Target: in.target, At: began}
		if err != nil {
			f.Error = err.Error()
		} else {
			d, err := s.recover(ctx, began, in, probe)
			f.RecoverySeconds, f.Recovered = seconds(d), err == nil
			if err != nil {
				f.Error = err.Error()
			}
		}
		if in.undo != nil {
			in.undo()
		}
		r.Faults = append(r.Faults, f)
		status := fmt.Sprintf("recovered in %.2f s", f.RecoverySeconds)
		if !f.Recovered {
			status = "NOT RECOVERED: " + f.Error
		}
		fmt.Fprintf(s.opts.Progress, "chaos: [%d/%d] %s %s: %s\n", i+1, s.opts.Faults, k, f.Target, status)
	}
	return <-loaded
}
