package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
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
	fl.DurationVar(&f.backoff, "restart-backoff", 500*time.Millisecond, "delay before restarting a group whose rank died; doubles with each quick crash in a row")
	fl.DurationVar(&f.maxBackoff, "restart-max-backoff", 30*time.Second, "longest delay before a restart")
	fl.DurationVar(&f.window, "crash-loop-window", 30*time.Second, "a group that dies within this long of its start crashed quickly; one that ran longer resets the count and the backoff")
	fl.IntVar(&f.limit, "crash-loop-limit", 5, "quick crashes in a row after which a group is left down (negative: never restart)")
}

// options are the supervisor's options for these flags.
func (f *restartFlags) options(cli *clientv3.Client, out io.Writer) supervisor.Options {
	limit := f.limit
	if limit == 0 {
		limit = -1 // no quick crash allowed: the first death leaves the group down
	}
	return supervisor.Options{
		Output: out, Etcd: cli, Backoff: f.backoff, MaxBackoff: f.maxBackoff,
		CrashLoopWindow: f.window, CrashLoopLimit: limit,
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
		RunE: func(cmd *cobra.Command, _ []string) error { return runUp(cmd, &f) },
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
	fl.StringVar(&f.dataDir, "data-dir", "", "etcd data directory (default: a temporary directory, removed on exit)")
	fl.IntVar(&f.etcdMembers, "etcd-members", 1, "embedded etcd members; with 3 or more, losing one interrupts nothing (every process gets all their endpoints)")
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

func runUp(cmd *cobra.Command, f *upFlags) error {
	ctx := cmd.Context()
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	specs, err := f.groups()
	if err != nil {
		return err
	}
	if f.etcdMembers < 1 {
		return fmt.Errorf("--etcd-members %d: must be >= 1", f.etcdMembers)
	}
	var link netshape.Profile
	if f.link != "" {
		if link, err = checkLink(f.link); err != nil {
			return err
		}
	}
	if f.checkOnly {
		return f.check(specs)
	}
	presetName := f.preset
	if f.modelDir != "" {
		presetName = ""
	}
	fmt.Fprintln(errOut, "preparing the model ...")
	dir, err := resolveModelDir(ctx, f.modelDir, presetName)
	if err != nil {
		return err
	}
	cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return err
	}
	ranks := 0
	for _, g := range specs {
		if _, err := engine.ShardPlan(cfg, engine.Shard{TP: g.tp}); err != nil {
			return fmt.Errorf("%s: TP %d: %w", g.name, g.tp, err)
		}
		ranks += g.tp
	}
	if f.backend.threads == 0 {
		f.backend.threads = max(1, runtime.NumCPU()/ranks) // the ranks share this machine's cores
	}
	name := defaultModelName(dir, presetName)

	etcdDir := f.dataDir
	if etcdDir == "" {
		if etcdDir, err = os.MkdirTemp("", "tandem-etcd-"); err != nil {
			return err
		}
		defer os.RemoveAll(etcdDir)
	}
	var nw *netshape.Network
	var etcdOpts cluster.EmbeddedOptions
	if f.link != "" {
		if nw, err = startLink(ctx, link, ranks, errOut); err != nil {
			return err
		}
		defer nw.Close()
		etcdOpts.ClientAddr = nw.HostAddr() + ":0" // the workers reach it over their links
		warnLoopback(errOut, nw.HostAddr(), f.coord.otlpEndpoint)
	}
	var (
		certs *clusterCerts
		itls  *internalTLS // the coordinator's
	)
	switch {
	case !f.internalTLS && f.internal.ca+f.internal.cert+f.internal.key != "":
		return errInternalTLSOff
	case f.internalTLS:
		if certs, err = newClusterCerts(&f.internal); err != nil {
			return err
		}
		defer certs.close()
		ef, err := certs.issue("etcd")
		if err != nil {
			return err
		}
		etcdOpts.TLS = &cluster.EmbeddedTLS{CA: ef.ca, Cert: ef.cert, Key: ef.key}
		cf, err := certs.issue("coordinator")
		if err != nil {
			return err
		}
		if itls, err = cf.load(); err != nil {
			return err
		}
	}
	fmt.Fprintln(errOut, "starting etcd ...")
	etcdOpts.Members = f.etcdMembers
	etcd, err := cluster.StartEmbedded(ctx, etcdDir, etcdOpts)
	if err != nil {
		return err
	}
	defer etcd.Close()
	endpoints := strings.Join(etcd.Endpoints(), ",")
	cli, err := dialEtcd(endpoints, itls)
	if err != nil {
		return err
	}
	defer cli.Close()

	rc, err := startCoordinator(ctx, &f.coord, cli, dir, name, itls)
	if err != nil {
		return err
	}
	defer rc.stop()

	common := []string{"--etcd-endpoints", endpoints, "--model", dir, "--model-name", name,
		"--threads", strconv.Itoa(f.backend.threads), "--kernels", f.backend.kernels, "--device", f.backend.device,
		"--otlp-endpoint", f.coord.otlpEndpoint}
	common = append(common, f.engine.args()...)
	groups := make([]supervisor.Group, len(specs))
	opts := f.restart.options(cli, errOut)
	node := 0 // each rank of each group has a node of the --link network
	for i, g := range specs {
		groups[i] = g.supervised(common)
		if certs != nil {
			if err := certs.withCerts(&groups[i]); err != nil {
				return err
			}
		}
		if nw != nil {
			if err := inLink(nw, &opts, &groups[i], node); err != nil {
				return err
			}
			node += g.tp
		}
	}
	sup, err := supervisor.Start(ctx, opts, groups...)
	if err != nil {
		return err
	}
	defer sup.Stop()
	if err := waitGroupsReady(ctx, cli, specs, f.readyTimeout, sup, errOut); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(errOut, "stopping ...")
			return nil // interrupted before the cluster was up
		}
		return err
	}
	fmt.Fprintf(out, "tandem is up: model %s, %d groups, %d worker processes, etcd %s\n", name, len(specs), ranks, endpoints)
	rc.printEndpoints(out)
	fmt.Fprintln(out, "Ctrl-C stops the cluster.")
	for down := 0; ; {
		select {
		case <-ctx.Done():
			fmt.Fprintln(errOut, "stopping ...")
			return nil
		case err := <-rc.errs:
			return err
		case d := <-sup.Down():
			slog.Error("worker group left down; the others go on serving", "group", d.Group, "err", d.Err)
			if down++; down == len(specs) {
				return errors.New("every worker group is down")
			}
		}
	}
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
