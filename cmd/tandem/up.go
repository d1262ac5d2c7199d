package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/internal/cpuquota"
	"github.com/tandemllm/tandem/internal/scratch"
	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/netshape"
	"github.com/tandemllm/tandem/worker/supervisor"
)

// upFlags are the flags of `tandem up`.
type upFlags struct {
	coord         coordinatorFlags
	modelDir      string
	preset        string
	mode          string
	prefillTP     int
	decodeTP      int
	tp            int
	prefillGroups int
	decodeGroups  int
	unifiedGroups int
	readyTimeout  time.Duration
	dataDir       string
	etcdMembers   int
	internalTLS   bool
	internal      internalFlags
	link          string
	engine        engineFlags
	backend       backendFlags
	restart       restartFlags
	checkOnly     bool
}

// restartFlags set how `tandem up` restarts a group whose rank died.
type restartFlags struct {
	backoff, maxBackoff, window time.Duration
	limit                       int
}

func (f *restartFlags) register(fl *pflag.FlagSet) {
	fl.DurationVar(&f.backoff, "restart-backoff", supervisor.DefaultBackoff, "delay before restarting a group whose rank died; doubles with each quick crash in a row")
	fl.DurationVar(&f.maxBackoff, "restart-max-backoff", supervisor.DefaultMaxBackoff, "longest delay before a restart")
	fl.DurationVar(&f.window, "crash-loop-window", supervisor.DefaultCrashLoopWindow, "a group that dies within this long of its start crashed quickly; one that ran longer resets the count and the backoff")
	fl.IntVar(&f.limit, "crash-loop-limit", supervisor.DefaultCrashLoopLimit, "quick crashes in a row after which a group is left down (at least 1)")
}

// options are the supervisor's options for these flags (a negative
// limit, which only tests set, turns restarts off).
func (f *restartFlags) options(cli *clientv3.Client, out io.Writer) supervisor.Options {
	return supervisor.Options{
		Output: out, Etcd: cli, Backoff: f.backoff, MaxBackoff: f.maxBackoff,
		CrashLoopWindow: f.window, CrashLoopLimit: f.limit,
	}
}

// groupSpec is one worker group `tandem up` starts.
type groupSpec struct {
	name string
	role cluster.Role
	tp   int
}

// supervised is the group as its supervisor runs it: rank r of
// incarnation i runs `tandem worker` with the group's flags and common.
func (g groupSpec) supervised(common []string) supervisor.Group {
	ranks := make([]int, g.tp)
	for r := range ranks {
		ranks[r] = r
	}
	return supervisor.Group{Name: g.name, Ranks: ranks, Args: func(rank, inc int) []string {
		return append([]string{"worker", "--role", string(g.role), "--group", g.name, "--tp", strconv.Itoa(g.tp),
			"--rank", strconv.Itoa(rank), "--incarnation", strconv.Itoa(inc)}, common...)
	}}
}

func (f *upFlags) groups() ([]groupSpec, error) {
	var gs []groupSpec
	add := func(role cluster.Role, n, tp int, nFlag, tpFlag string) error {
		if n < 0 {
			return fmt.Errorf("%s %d: must be >= 0", nFlag, n)
		}
		if tp < 1 {
			return fmt.Errorf("%s %d: must be >= 1", tpFlag, tp)
		}
		for i := range n {
			gs = append(gs, groupSpec{name: fmt.Sprintf("%s-%d", role, i), role: role, tp: tp})
		}
		return nil
	}
	switch f.mode {
	case "disaggregated":
		if err := add(cluster.RolePrefill, f.prefillGroups, f.prefillTP, "--prefill-groups", "--prefill-tp"); err != nil {
			return nil, err
		}
		if err := add(cluster.RoleDecode, f.decodeGroups, f.decodeTP, "--decode-groups", "--decode-tp"); err != nil {
			return nil, err
		}
		if f.prefillGroups == 0 || f.decodeGroups == 0 {
			return nil, errors.New("--mode disaggregated needs at least one prefill and one decode group")
		}
	case "unified":
		if err := add(cluster.RoleUnified, f.unifiedGroups, f.tp, "--groups", "--tp"); err != nil {
			return nil, err
		}
		if f.unifiedGroups == 0 {
			return nil, errors.New("--groups 0: --mode unified needs at least one group")
		}
	default:
		return nil, fmt.Errorf("--mode %q: must be disaggregated or unified", f.mode)
	}
	return gs, nil
}

func newUpCmd() *cobra.Command {
	var f upFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a whole cluster on this machine: etcd, a coordinator and worker processes",
		Long: `Start a whole Tandem cluster on this machine: an embedded etcd server, a
coordinator (gRPC and OpenAI-compatible HTTP APIs) in this process, and one
worker process per rank. The default is disaggregated serving on the CPU with
one prefill group of TP 2 and one decode group of TP 2, running the "tiny"
preset (created in the cache directory on first use). --mode unified --tp N
runs colocated groups instead. A group whose rank dies is restarted as a
whole, with backoff, until it crashes --crash-loop-limit times in a row.
Ctrl-C or SIGTERM stops every process. --link PROFILE puts each worker
process in its own network namespace, linked through a bridge shaped to
the profile (eth-25g, ib-400g, ...), so allreduces and KV transfers cross
a link with a real bandwidth limit.

Every connection inside the cluster (etcd, worker gRPC, KV transfers, the
TCP ring) is mutual TLS with a throwaway CA and a certificate per process,
made in a temporary directory and removed on exit (--internal-tls=false
turns it off; --internal-ca/-cert/-key use your files). Every port is on
loopback unless an address flag says otherwise. The public APIs take
--api-key/--api-keys-file and --tls-cert/--tls-key as "tandem coordinator"
does (docs/security.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := runUp(cmd, &f)
			if stoppedAsAsked(cmd.Context(), err) {
				return nil // Ctrl-C before the cluster was up; all it started is gone
			}
			return err
		},
	}
	f.coord.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.modelDir, "model", "", "model directory (instead of --preset)")
	fl.StringVar(&f.preset, "preset", "tiny", "preset model, created in the cache directory on first use")
	fl.StringVar(&f.mode, "mode", "disaggregated", "disaggregated (prefill and decode groups) or unified (colocated)")
	fl.IntVar(&f.prefillTP, "prefill-tp", 2, "tensor-parallel degree of each prefill group")
	fl.IntVar(&f.decodeTP, "decode-tp", 2, "tensor-parallel degree of each decode group")
	fl.IntVar(&f.tp, "tp", 2, "tensor-parallel degree of each unified group (--mode unified)")
	fl.IntVar(&f.prefillGroups, "prefill-groups", 1, "number of prefill groups")
	fl.IntVar(&f.decodeGroups, "decode-groups", 1, "number of decode groups")
	fl.IntVar(&f.unifiedGroups, "groups", 1, "number of unified groups (--mode unified)")
	fl.DurationVar(&f.readyTimeout, "ready-timeout", 5*time.Minute, "how long to wait for every group to be ready")
	fl.StringVar(&f.dataDir, "data-dir", "", "etcd data directory (default: a temporary directory, removed on exit, or by the next start if this process is killed)")
	fl.IntVar(&f.etcdMembers, "etcd-members", 1, "embedded etcd members, an odd number; with 3 or more, losing one interrupts nothing (every process gets all their endpoints)")
	fl.BoolVar(&f.internalTLS, "internal-tls", true, "mutual TLS on every connection inside the cluster (worker gRPC, KV, ring, etcd), with a throwaway CA and a certificate per process made in a temporary directory, or the files of --internal-ca/-cert/-key (false: plain TCP, to compare)")
	f.internal.register(fl)
	fl.StringVar(&f.link, "link", "", linkHelp)
	f.engine.register(cmd)
	f.backend.register(fl)
	f.restart.register(fl)
	fl.BoolVar(&f.checkOnly, "check", false, "check the flags, the link and the model's split, then exit without starting anything")
	_ = fl.MarkHidden("check") // for tandem bench compare, before it starts any cluster
	return cmd
}

// validate checks every flag before anything starts; each error names
// its flag.
func (f *upFlags) validate() error {
	switch {
	case f.etcdMembers < 1 || f.etcdMembers%2 == 0:
		return fmt.Errorf("--etcd-members %d: must be odd and >= 1 (a quorum of 2 members survives no more losses than 1 does, of 4 no more than 3)", f.etcdMembers)
	case f.readyTimeout <= 0:
		return fmt.Errorf("--ready-timeout %v: must be > 0", f.readyTimeout)
	}
	for _, check := range []func() error{f.coord.validate, f.engine.validate, f.restart.validate} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// validate checks the restart flags.
func (f *restartFlags) validate() error {
	switch {
	case f.backoff < 0:
		return fmt.Errorf("--restart-backoff %v: must be >= 0 (0: the default, %v)", f.backoff, supervisor.DefaultBackoff)
	case f.maxBackoff < 0:
		return fmt.Errorf("--restart-max-backoff %v: must be >= 0 (0: the default, %v)", f.maxBackoff, supervisor.DefaultMaxBackoff)
	case f.maxBackoff > 0 && f.maxBackoff < f.backoff:
		return fmt.Errorf("--restart-max-backoff %v: must be >= --restart-backoff %v", f.maxBackoff, f.backoff)
	case f.window < 0:
		return fmt.Errorf("--crash-loop-window %v: must be >= 0 (0: the default, %v)", f.window, supervisor.DefaultCrashLoopWindow)
	case f.limit < 1:
		return fmt.Errorf("--crash-loop-limit %d: must be >= 1", f.limit)
	}
	return nil
}

// upPlan is what `tandem up` starts, from its flags.
type upPlan struct {
	specs []groupSpec
	link  netshape.Profile // when --link is set
	dir   string           // the model directory
	name  string           // the model id served
	ranks int              // worker processes, all groups together
}

func runUp(cmd *cobra.Command, f *upFlags) error {
	ctx := cmd.Context()
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	plan, err := f.plan(ctx, errOut)
	if err != nil || f.checkOnly {
		return err
	}
	env, err := f.startEnv(ctx, plan, errOut)
	defer env.close()
	if err != nil {
		return err
	}
	rc, err := startCoordinator(ctx, &f.coord, env.cli, plan.dir, plan.name, env.itls)
	if err != nil {
		return err
	}
	defer rc.stop()
	sup, err := f.startGroups(ctx, plan, env, errOut)
	if err != nil {
		return err
	}
	defer sup.Stop()
	if err := waitUp(ctx, env.cli, plan.specs, f.readyTimeout, sup, rc, errOut); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(errOut, "stopping ...")
			return nil // interrupted before the cluster was up
		}
		return err
	}
	fmt.Fprintf(out, "tandem is up: model %s, %d groups, %d worker processes, etcd %s\n", plan.name, len(plan.specs), plan.ranks, env.endpoints)
	rc.printEndpoints(out)
	fmt.Fprintln(out, "Ctrl-C stops the cluster.")
	return serveUp(ctx, rc, sup, len(plan.specs), errOut)
}

// plan checks the flags and the model: the groups to start, each of a TP
// the model splits over.
func (f *upFlags) plan(ctx context.Context, errOut io.Writer) (upPlan, error) {
	var p upPlan
	var err error
	if p.specs, err = f.groups(); err != nil {
		return p, err
	}
	if err := f.validate(); err != nil {
		return p, err
	}
	if f.link != "" {
		if p.link, err = checkLink(f.link); err != nil {
			return p, err
		}
	}
	if f.checkOnly {
		return p, f.check(p.specs)
	}
	presetName := f.preset
	if f.modelDir != "" {
		presetName = ""
	}
	fmt.Fprintln(errOut, "preparing the model ...")
	if p.dir, err = resolveModelDir(ctx, f.modelDir, presetName); err != nil {
		return p, err
	}
	cfg, err := model.LoadConfig(filepath.Join(p.dir, "config.json"))
	if err != nil {
		return p, err
	}
	for _, g := range p.specs {
		if _, err := engine.ShardPlan(cfg, engine.Shard{TP: g.tp}); err != nil {
			return p, fmt.Errorf("%s: TP %d: %w", g.name, g.tp, err)
		}
		p.ranks += g.tp
	}
	if f.backend.threads == 0 {
		f.backend.threads = max(1, cpuquota.CPUs()/p.ranks) // the ranks share the cores this process may use
	}
	p.name = defaultModelName(p.dir, presetName)
	return p, nil
}

// etcdScratch prefixes the embedded etcd's data directories (tandem up
// without --data-dir, generate --local): each start removes those that
// killed processes left, about 128 MB each.
const etcdScratch = "tandem-etcd-"

// upEnv is what the cluster's processes share: etcd and its client, the
// --link network, the internal certificates.
type upEnv struct {
	endpoints string
	cli       *clientv3.Client
	nw        *netshape.Network // with --link
	certs     *clusterCerts     // with --internal-tls
	itls      *internalTLS      // the coordinator's
	closers   []func()
}

// close releases what startEnv made, in reverse order.
func (e *upEnv) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// startEnv makes etcd's data directory, the --link network, the
// certificates and etcd, and dials it. The env's close releases what was
// made, whether or not startEnv failed.
func (f *upFlags) startEnv(ctx context.Context, plan upPlan, errOut io.Writer) (*upEnv, error) {
	env := &upEnv{}
	etcdDir := f.dataDir
	if etcdDir == "" {
		dir, err := scratch.New(etcdScratch, scratch.Options{})
		if err != nil {
			return env, err
		}
		etcdDir = dir.Path()
		env.closers = append(env.closers, func() { dir.Close() })
	}
	var etcdOpts cluster.EmbeddedOptions
	if f.link != "" {
		nw, err := startLink(ctx, plan.link, plan.ranks, errOut)
		if err != nil {
			return env, err
		}
		env.nw = nw
		env.closers = append(env.closers, func() { nw.Close() })
		etcdOpts.ClientAddr = nw.HostAddr() + ":0" // the workers reach it over their links
		warnLoopback(errOut, nw.HostAddr(), f.coord.otlpEndpoint)
	}
	if err := f.makeCerts(env, &etcdOpts); err != nil {
		return env, err
	}
	fmt.Fprintln(errOut, "starting etcd ...")
	etcdOpts.Members = f.etcdMembers
	etcd, err := cluster.StartEmbedded(ctx, etcdDir, etcdOpts)
	if err != nil {
		return env, err
	}
	env.closers = append(env.closers, etcd.Close)
	env.endpoints = strings.Join(etcd.Endpoints(), ",")
	if env.cli, err = dialEtcd(env.endpoints, "", env.itls); err != nil {
		return env, err
	}
	env.closers = append(env.closers, func() { env.cli.Close() })
	return env, nil
}

// makeCerts makes the internal certificates (--internal-tls): etcd's,
// into etcdOpts, and the coordinator's, into env.
func (f *upFlags) makeCerts(env *upEnv, etcdOpts *cluster.EmbeddedOptions) error {
	switch {
	case !f.internalTLS && f.internal.ca+f.internal.cert+f.internal.key != "":
		return errInternalTLSOff
	case !f.internalTLS:
		return nil
	}
	certs, err := newClusterCerts(&f.internal)
	if err != nil {
		return err
	}
	env.certs = certs
	env.closers = append(env.closers, certs.close)
	ef, err := certs.issue("etcd")
	if err != nil {
		return err
	}
	etcdOpts.TLS = &cluster.EmbeddedTLS{CA: ef.ca, Cert: ef.cert, Key: ef.key}
	cf, err := certs.issue("coordinator")
	if err != nil {
		return err
	}
	env.itls, err = cf.load()
	return err
}

// startGroups starts every group's ranks under one supervisor: each a
// `tandem worker` with the flags they share, its certificates and, with
// --link, its node of the network.
func (f *upFlags) startGroups(ctx context.Context, plan upPlan, env *upEnv, errOut io.Writer) (*supervisor.Supervisor, error) {
	common := []string{"--etcd-endpoints", env.endpoints, "--model", plan.dir, "--model-name", plan.name,
		"--threads", strconv.Itoa(f.backend.threads), "--kernels", f.backend.kernels, "--device", f.backend.device,
		"--otlp-endpoint", f.coord.otlpEndpoint}
	common = append(common, f.engine.args()...)
	groups := make([]supervisor.Group, len(plan.specs))
	opts := f.restart.options(env.cli, errOut)
	node := 0 // each rank of each group has a node of the --link network
	for i, g := range plan.specs {
		groups[i] = g.supervised(common)
		if env.certs != nil {
			if err := env.certs.withCerts(&groups[i]); err != nil {
				return nil, err
			}
		}
		if env.nw != nil {
			if err := inLink(env.nw, &opts, &groups[i], node); err != nil {
				return nil, err
			}
			node += g.tp
		}
	}
	return supervisor.Start(ctx, opts, groups...)
}

// serveUp serves until ctx ends (Ctrl-C, SIGTERM), the coordinator fails
// or every group is down. On a stop the coordinator stops first, so
// streams in flight finish on the workers still there and no group is
// seen leaving; the caller then stops the workers.
func serveUp(ctx context.Context, rc *runningCoordinator, sup *supervisor.Supervisor, groups int, errOut io.Writer) error {
	for down := 0; ; {
		select {
		case <-ctx.Done():
			fmt.Fprintln(errOut, "stopping ...")
			rc.stop()
			return nil
		case err := <-rc.errs:
			return err
		case d := <-sup.Down():
			slog.Error("worker group left down; the others go on serving", "group", d.Group, "err", d.Err)
			if down++; down == groups {
				return errors.New("every worker group is down")
			}
		}
	}
}

// waitUp waits until every group is ready (waitGroupsReady) and the
// coordinator routes to each, within timeout.
func waitUp(ctx context.Context, cli *clientv3.Client, specs []groupSpec, timeout time.Duration, sup *supervisor.Supervisor, rc *runningCoordinator, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := waitGroupsReady(ctx, cli, specs, timeout, sup, w); err != nil {
		return err
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.name
	}
	return rc.c.WaitRoutable(ctx, names...)
}

// waitGroupsReady waits until every group has all its ranks registered,
// printing progress as they come; a group left down meanwhile (it crashed
// too often) is an error.
func waitGroupsReady(ctx context.Context, cli *clientv3.Client, specs []groupSpec, timeout time.Duration, sup *supervisor.Supervisor, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := cluster.WatchMembership(ctx, cli)
	if err != nil {
		return err
	}
	defer m.Close()
	last := -1
	for {
		changed := m.Changed()
		ready := 0
		byName := map[string]cluster.Group{}
		for _, g := range m.Groups() {
			byName[g.Name] = g
		}
		var missing []string
		for _, s := range specs {
			if g, ok := byName[s.name]; ok && g.Ready() {
				ready++
			} else {
				missing = append(missing, s.name)
			}
		}
		if ready != last {
			fmt.Fprintf(w, "groups ready: %d/%d\n", ready, len(specs))
			last = ready
		}
		if ready == len(specs) {
			return nil
		}
		select {
		case <-changed:
		case d := <-sup.Down():
			return fmt.Errorf("group %s is down before it was ready: %w", d.Group, d.Err)
		case <-ctx.Done():
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return ctx.Err() // interrupted
			}
			return fmt.Errorf("groups not ready after %v: %s", timeout, strings.Join(missing, ", "))
		}
	}
}
