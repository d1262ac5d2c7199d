package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemllm/tandem/cluster"
)

// ErrCrashLoop is wrapped by the error of a group left down because its
// incarnations kept dying soon after they started.
var ErrCrashLoop = errors.New("supervisor: crash loop")

// Group is one worker group to run.
type Group struct {
	// Name is the group's name (its etcd key element); unique.
	Name string
	// Ranks are the ranks run as processes here (rank 0 may run
	// elsewhere, as in `generate --local`); at least one.
	Ranks []int
	// Args returns the command line, after the binary, of a rank of the
	// given incarnation (0 at the first start, one more at each restart).
	Args func(rank, incarnation int) []string
}

// The restart policy's defaults, as `tandem up` ships them.
const (
	DefaultBackoff         = 500 * time.Millisecond
	DefaultMaxBackoff      = 30 * time.Second
	DefaultCrashLoopWindow = 30 * time.Second
	DefaultCrashLoopLimit  = 5
)

// Options configure Start. Zero fields take the documented defaults.
type Options struct {
	// Binary is the program run for each rank (default: this process's
	// executable, os.Executable).
	Binary string
	// Output receives every rank's stdout and stderr; it must be safe for
	// concurrent use (default os.Stderr).
	Output io.Writer
	// Logger receives the supervisor's own logs (default slog.Default()).
	Logger *slog.Logger
	// Etcd, if set, is the cluster's etcd: before every start the group's
	// leftovers there are cleared (cluster.Forget), and an incarnation
	// whose ranks were all registered fails as soon as one registration
	// lapses while its process still runs. Default nil: neither.
	Etcd *clientv3.Client
	// StopTimeout is how long a rank has between SIGTERM and SIGKILL
	// (default 10s).
	StopTimeout time.Duration
	// Backoff is the delay before a restart; it doubles with each quick
	// crash in a row (default DefaultBackoff).
	Backoff time.Duration
	// MaxBackoff caps the delay (default DefaultMaxBackoff).
	MaxBackoff time.Duration
	// CrashLoopWindow: an incarnation that dies within this long of its
	// start is a quick crash; one that ran longer resets the count and
	// the backoff (default DefaultCrashLoopWindow).
	CrashLoopWindow time.Duration
	// CrashLoopLimit is how many quick crashes in a row leave the group
	// down for good (default DefaultCrashLoopLimit). Negative: never
	// restart; the first death leaves the group down.
	CrashLoopLimit int
}

func (o *Options) defaults() error {
	if o.Binary == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("supervisor: finding this executable: %w", err)
		}
		o.Binary = self
	}
	if o.Output == nil {
		o.Output = os.Stderr
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.CrashLoopWindow <= 0 {
		o.CrashLoopWindow = DefaultCrashLoopWindow
	}
	if o.CrashLoopLimit == 0 {
		o.CrashLoopLimit = DefaultCrashLoopLimit
	}
	return nil
}

// Status is a group's state at one moment.
type Status struct {
	Group string
	// Incarnation is the running (or last) incarnation; Restarts counts
	// the incarnations started after the first.
	Incarnation, Restarts int
	// Ranks and PIDs are the processes of the running incarnation, in
	// Group.Ranks order; PIDs is nil while none runs.
	Ranks, PIDs []int
	// Started is when the running incarnation started.
	Started time.Time
	// Ready: with Options.Etcd, every rank of the running incarnation is
	// registered.
	Ready bool
	// Down: the group was left down for good (see Supervisor.Down).
	Down bool
}

// Failure is a group left down for good, and why.
type Failure struct {
	Group string
	Err   error
}

// Supervisor runs worker groups; see the package documentation.
type Supervisor struct {
	opts    Options
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	members *cluster.Membership // nil without Options.Etcd
	groups  []*group
	down    chan Failure
	stop    sync.Once
}

type group struct {
	spec Group
	mu   sync.Mutex
	st   Status
}

// proc is one rank process of one incarnation.
type proc struct {
	rank int
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // Wait's result, read after done
}

// run is one incarnation of a group: its processes, each of which sends
// itself on exits when it ends.
type run struct {
	n     int
	procs []*proc
	exits chan *proc // buffered for every process, so no waiter blocks
}

// Start starts the first incarnation of every group and supervises them
// until Stop. ctx bounds only the start. A rank that cannot be started at
// all (no such binary) fails Start, with every process started so far
// stopped.
func Start(ctx context.Context, opts Options, groups ...Group) (*Supervisor, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, g := range groups {
		switch {
		case g.Name == "" || seen[g.Name]:
			return nil, fmt.Errorf("supervisor: group name %q empty or repeated", g.Name)
		case len(g.Ranks) == 0 || g.Args == nil:
			return nil, fmt.Errorf("supervisor: group %s has no ranks or no Args", g.Name)
		}
		seen[g.Name] = true
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Supervisor{opts: opts, log: opts.Logger.With("component", "supervisor"), ctx: sctx, cancel: cancel, down: make(chan Failure, len(groups))}
	if opts.Etcd != nil {
		m, err := cluster.WatchMembership(sctx, opts.Etcd)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("supervisor: %w", err)
		}
		s.members = m
	}
	first := make([]*run, len(groups))
	for i, spec := range groups {
		g := &group{spec: spec, st: Status{Group: spec.Name, Ranks: slices.Clone(spec.Ranks)}}
		s.groups = append(s.groups, g)
		r, err := s.start(ctx, g, 0)
		if err != nil {
			for _, r := range first[:i] {
				s.stopAll(r.procs)
			}
			s.Stop()
			return nil, err
		}
		first[i] = r
	}
	for i, g := range s.groups {
		s.wg.Go(func() { s.supervise(g, first[i]) })
	}
	return s, nil
}

// Down delivers each group left down for good, once.
func (s *Supervisor) Down() <-chan Failure { return s.down }

// Status returns the named group's state.
func (s *Supervisor) Status(name string) (Status, bool) {
	for _, g := range s.groups {
		if g.spec.Name == name {
			g.mu.Lock()
			defer g.mu.Unlock()
			st := g.st
			st.Ranks, st.PIDs = slices.Clone(st.Ranks), slices.Clone(st.PIDs)
			return st, true
		}
	}
	return Status{}, false
}

// Stop stops every rank of every group (SIGTERM, SIGKILL after
// StopTimeout) and returns once all have exited. Idempotent.
func (s *Supervisor) Stop() {
	s.stop.Do(func() {
		s.cancel()
		s.wg.Wait()
		if s.members != nil {
			s.members.Close()
		}
	})
}

// supervise runs g from its first incarnation until Stop or until it is
// left down.
func (s *Supervisor) supervise(g *group, r *run) {
	crashes := 0
	for {
		why := s.await(g, r)
		s.stopAll(r.procs)
		g.mu.Lock()
		inc, ran := r.n, time.Since(g.st.Started)
		g.st.PIDs, g.st.Ready = nil, false
		g.mu.Unlock()
		if s.ctx.Err() != nil {
			return
		}
		if ran < s.opts.CrashLoopWindow {
			crashes++
		} else {
			crashes = 0
		}
		for {
			if s.opts.CrashLoopLimit < 0 {
				s.leaveDown(g, fmt.Errorf("group %s incarnation %d: %w; restarts are off", g.spec.Name, inc, why))
				return
			}
			if crashes >= s.opts.CrashLoopLimit {
				s.leaveDown(g, fmt.Errorf("%w: group %s died within %v of its start %d times in a row; last: %w",
					ErrCrashLoop, g.spec.Name, s.opts.CrashLoopWindow, crashes, why))
				return
			}
			delay := s.backoff(crashes)
			s.log.Warn("group died; restarting it as a whole", "group", g.spec.Name, "incarnation", inc,
				"reason", why, "ran", ran.Round(time.Millisecond), "restart_in", delay, "quick_crashes", crashes)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			inc++
			var err error
			if r, err = s.start(s.ctx, g, inc); err == nil {
				break
			}
			if s.ctx.Err() != nil {
				return
			}
			why, ran = err, 0
			crashes++
		}
	}
}

// backoff is the delay before a restart after crashes quick crashes in a
// row (0 after an incarnation that ran long).
func (s *Supervisor) backoff(crashes int) time.Duration {
	d := s.opts.Backoff
	for i := 1; i < crashes && d < s.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, s.opts.MaxBackoff)
}

func (s *Supervisor) leaveDown(g *group, err error) {
	if s.opts.CrashLoopLimit < 0 {
		s.log.Info("group ended; restarts are off", "group", g.spec.Name, "err", err)
	} else {
		s.log.Error("group left down", "group", g.spec.Name, "err", err)
	}
	g.mu.Lock()
	g.st.Down = true
	g.mu.Unlock()
	s.down <- Failure{Group: g.spec.Name, Err: err}
}

// start clears the group's leftovers in etcd and starts incarnation inc
// of every rank; on failure it stops what it started.
func (s *Supervisor) start(ctx context.Context, g *group, inc int) (*run, error) {
	if s.opts.Etcd != nil {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cluster.Forget(fctx, s.opts.Etcd, g.spec.Name)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("supervisor: clearing group %s before incarnation %d: %w", g.spec.Name, inc, err)
		}
	}
	r := &run{n: inc, exits: make(chan *proc, len(g.spec.Ranks))}
	pids := make([]int, 0, len(g.spec.Ranks))
	for _, rank := range g.spec.Ranks {
		cmd := exec.Command(s.opts.Binary, g.spec.Args(rank, inc)...)
		cmd.Stdout, cmd.Stderr = s.opts.Output, s.opts.Output
		cmd.SysProcAttr = sysProcAttr()
		if err := cmd.Start(); err != nil {
			s.stopAll(r.procs)
			return nil, fmt.Errorf("supervisor: starting rank %d of group %s: %w", rank, g.spec.Name, err)
		}
		p := &proc{rank: rank, cmd: cmd, done: make(chan struct{})}
		go func() {
			p.err = cmd.Wait()
			close(p.done)
			r.exits <- p
		}()
		r.procs = append(r.procs, p)
		pids = append(pids, cmd.Process.Pid)
	}
	g.mu.Lock()
	if inc > 0 {
		g.st.Restarts++
	}
	g.st.Incarnation, g.st.PIDs, g.st.Started, g.st.Ready = inc, pids, time.Now(), false
	g.mu.Unlock()
	s.log.Info("group started", "group", g.spec.Name, "incarnation", inc, "pids", pids)
	return r, nil
}

// await returns why incarnation r ended: a rank exited, or (with etcd) a
// rank's registration lapsed after all had registered; nil when the
// supervisor stops.
func (s *Supervisor) await(g *group, r *run) error {
	registered := false
	for {
		var changed <-chan struct{}
		if s.members != nil {
			changed = s.members.Changed()
			cg, ok := s.members.Group(g.spec.Name)
			switch ready := ok && cg.Ready() && cg.Incarnation == r.n; {
			case ready && !registered:
				registered = true
				g.mu.Lock()
				g.st.Ready = true
				g.mu.Unlock()
				s.log.Info("group ready", "group", g.spec.Name, "incarnation", r.n)
			case !ready && registered:
				select {
				case p := <-r.exits: // a rank that exited explains it better
					return exitErr(p)
				default:
				}
				missing := g.spec.Ranks
				if ok && cg.Incarnation == r.n {
					missing = cg.Missing()
				}
				return fmt.Errorf("the registration of rank(s) %v lapsed while the process ran (paused, or cut off from etcd)", missing)
			}
		}
		select {
		case p := <-r.exits:
			return exitErr(p)
		case <-changed:
		case <-s.ctx.Done():
			return nil
		}
	}
}

func exitErr(p *proc) error {
	if p.err == nil {
		return fmt.Errorf("rank %d exited (status 0)", p.rank)
	}
	return fmt.Errorf("rank %d exited: %w", p.rank, p.err)
}

// stopAll asks every live process to stop (SIGTERM, and SIGCONT so that a
// paused one can act on it), kills what is left after StopTimeout, and
// returns once all have been reaped.
func (s *Supervisor) stopAll(procs []*proc) {
	for _, p := range procs {
		select {
		case <-p.done:
		default:
			terminate(p.cmd.Process)
		}
	}
	deadline := time.NewTimer(s.opts.StopTimeout)
	defer deadline.Stop()
	for _, p := range procs {
		select {
		case <-p.done:
			continue
		case <-deadline.C:
		}
		// The deadline has fired: kill every process still running.
		for _, q := range procs {
			select {
			case <-q.done:
			default:
				s.log.Warn("rank did not stop in time; killing it", "pid", q.cmd.Process.Pid, "rank", q.rank)
				_ = q.cmd.Process.Kill()
			}
		}
		for _, q := range procs {
			<-q.done
		}
		return
	}
}
