package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/internal/cpuquota"
	"github.com/tandemllm/tandem/metrics"
	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/nccl"
	"github.com/tandemllm/tandem/nccl/ring"
	"github.com/tandemllm/tandem/telemetry"
	"github.com/tandemllm/tandem/worker"
)

// groupFlags place a process in a tensor-parallel group.
type groupFlags struct {
	tp, rank      int
	incarnation   int
	group         string
	etcdEndpoints string
	etcdPrefix    string
	listen        string
	joinTimeout   time.Duration
	// listenIn, when set, makes the collective's listener through it (in
	// another network namespace: --link).
	listenIn func(func() error) error
	// tls, when set, is the mutual TLS of etcd and the ring (loaded from
	// --internal-*, or made by the process that starts the group).
	tls *internalTLS
}

// validate checks the flags; a process that joins a group itself
// (joins) also needs the group's name and etcd.
func (g *groupFlags) validate(joins bool) error {
	switch {
	case g.tp < 1:
		return fmt.Errorf("--tp %d: must be >= 1", g.tp)
	case g.rank < 0 || g.rank >= g.tp:
		return fmt.Errorf("--rank %d: must be in 0..%d for --tp %d", g.rank, g.tp-1, g.tp)
	case g.incarnation < 0:
		return fmt.Errorf("--incarnation %d: must be >= 0", g.incarnation)
	case joins && g.tp > 1 && g.group == "":
		return errors.New("--group is required with --tp > 1")
	case joins && g.tp > 1 && g.etcdEndpoints == "":
		return errors.New("--etcd-endpoints is required with --tp > 1")
	case g.joinTimeout <= 0:
		return fmt.Errorf("--join-timeout %v: must be > 0", g.joinTimeout)
	}
	if err := cluster.CheckPrefix(g.etcdPrefix); err != nil {
		return fmt.Errorf("--etcd-prefix: %w", err)
	}
	return nil
}

func newWorkerCmd() *cobra.Command {
	var f workerFlags
	cmd := &cobra.Command{
		Use:   "worker --role ROLE --tp N --rank R --group G --etcd-endpoints URLS (--model DIR | --preset NAME)",
		Short: "Run one rank of a worker group (prefill, decode or unified)",
		Long: `Run one rank of a worker group. The ranks of group G find each other through
etcd (each publishes the address of its collective endpoint and waits for the
others, up to --join-timeout), connect a TCP ring and load only their own
slices of the weights. Each rank then serves gRPC on --grpc-addr and registers
itself in etcd under a lease (role, group, rank, address, KV capacity), so the
coordinator can route to the group once all its ranks are there.

Rank 0 leads: it serves the Worker API to the coordinator and runs the
continuous-batching scheduler; the other ranks follow its step plans.
--role prefill computes prompts and sends their KV cache to decode groups;
--role decode continues them; --role unified does both (colocated serving).

--local-ranks N runs N ranks of the group as child processes of this one (a
pod holding a group, or one node of a group spanning nodes): ranks
--node-rank×N … --node-rank×N+N−1, rank i of them on GPU --gpu+i and on the
ports of --grpc-addr, --metrics-addr and --listen plus i. When one of them
exits the others are stopped and this process exits, so the group restarts
as one unit.

--metrics-addr also serves the probes: /healthz (and /livez) answers 200
while the process runs, /readyz 200 once the rank has joined its group (rank
0: once the whole group has); the gRPC port serves grpc.health.v1.Health,
NOT_SERVING until then, and server reflection.

--internal-ca, --internal-cert and --internal-key make every connection of
the rank mutual TLS against the cluster's CA: its gRPC server and KV data
plane, its ring, etcd (docs/security.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runWorker(cmd, &f) },
	}
	f.register(cmd)
	return cmd
}

// workerFlags are the flags of `tandem worker`.
type workerFlags struct {
	g           groupFlags
	roleFlag    string
	role        cluster.Role // parsed from roleFlag
	model       servedModel
	grpcAddr    string
	advertise   string
	metricsAddr string
	otlp        string
	localRanks  int
	nodeRank    int
	eng         engineFlags
	be          backendFlags
	internal    internalFlags
}

func (f *workerFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	f.g.register(cmd)
	fl.StringVar(&f.roleFlag, "role", "", "what the group does: prefill, decode or unified")
	f.model.register(fl, "model directory")
	fl.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:0", "listen address of this rank's gRPC server")
	fl.StringVar(&f.advertise, "advertise-addr", "", "address other processes dial to reach --grpc-addr (default: the address listened on); its host is also advertised for a --listen on all interfaces")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "127.0.0.1:0", "listen address of this rank's Prometheus /metrics and its /healthz (/livez) and /readyz probes (empty: none)")
	fl.StringVar(&f.otlp, "otlp-endpoint", "", "OTLP/gRPC collector (host:port) to export OpenTelemetry spans to; empty: no export")
	fl.IntVar(&f.localRanks, "local-ranks", 1, "ranks of the group this process runs, as child processes (one per GPU of a node)")
	fl.IntVar(&f.nodeRank, "node-rank", 0, "index of this node among the nodes of a group spanning nodes: its ranks start at --node-rank × --local-ranks")
	f.eng.register(cmd)
	f.be.register(fl)
	f.internal.register(fl)
}

// validate checks the flags and sets g.rank to this process's first rank.
func (f *workerFlags) validate() error {
	role, err := cluster.ParseRole(f.roleFlag)
	if err != nil {
		return fmt.Errorf("--role: %w", err)
	}
	f.role = role
	if f.g.etcdEndpoints == "" {
		return errors.New("--etcd-endpoints is required: workers register in etcd")
	}
	switch {
	case f.localRanks < 1:
		return fmt.Errorf("--local-ranks %d: must be >= 1", f.localRanks)
	case f.nodeRank < 0:
		return fmt.Errorf("--node-rank %d: must be >= 0", f.nodeRank)
	case (f.localRanks > 1 || f.nodeRank > 0) && f.g.rank != 0:
		return fmt.Errorf("--rank %d: with --local-ranks or --node-rank the ranks follow from them; leave --rank out", f.g.rank)
	case f.g.tp >= 1 && (f.nodeRank+1)*f.localRanks > f.g.tp:
		return fmt.Errorf("--node-rank %d with --local-ranks %d: ranks %d..%d are outside a group of --tp %d",
			f.nodeRank, f.localRanks, f.nodeRank*f.localRanks, (f.nodeRank+1)*f.localRanks-1, f.g.tp)
	}
	if err := f.eng.validate(); err != nil {
		return err
	}
	f.g.rank += f.nodeRank * f.localRanks
	if f.be.threads == 0 { // the ranks share the cores this process may use: a container's CPU limit, where lower
		f.be.threads = max(1, cpuquota.CPUs()/f.localRanks)
	}
	return f.g.validate(true)
}

func runWorker(cmd *cobra.Command, f *workerFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	var err error
	if f.g.tls, err = f.internal.load(); err != nil {
		return err
	}
	ctx := cmd.Context()
	dir, modelName, err := f.model.resolve(ctx)
	if err != nil {
		return err
	}
	// A TP degree the model cannot be split by is a configuration error
	// every rank would hit after waiting for its group: say so at once.
	if err := checkShardable(dir, f.g.tp); err != nil {
		slog.Error("this model cannot be split over the group's ranks", "tp", f.g.tp, "model", dir, "err", err)
		return fmt.Errorf("--tp %d: %w", f.g.tp, err)
	}
	if f.localRanks > 1 {
		return runLocalRanks(ctx, cmd, f, dir, modelName)
	}
	if f.g.listen, err = ringAdvertised(f.g.listen, f.advertise); err != nil {
		return err
	}
	reg := metrics.NewRegistry()
	probes := &rankProbes{group: f.g.group, rank: f.g.rank, tp: f.g.tp}
	stopMetrics, err := serveMetrics(f.metricsAddr, reg, probes, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer stopMetrics()
	cli, err := dialEtcd(f.g.etcdEndpoints, f.g.etcdPrefix, f.g.tls)
	if err != nil {
		return err
	}
	defer cli.Close()
	m, comm, closeAll, err := openShard(ctx, dir, &f.g, &f.be, cmd.ErrOrStderr())
	if err != nil {
		if stoppedAsAsked(ctx, err) {
			return nil // its supervisor stopping before the group formed
		}
		return err
	}
	defer closeAll()
	ln, err := net.Listen("tcp", f.grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr %q: %w", f.grpcAddr, err)
	}
	node, _ := os.Hostname()
	tel, err := telemetry.Setup(ctx, telemetry.Options{
		Endpoint: f.otlp, ServiceName: "tandem-worker",
		Attributes: []attribute.KeyValue{telemetry.Group(f.g.group), telemetry.Rank(f.g.rank), telemetry.Role(string(f.role)), attribute.String("host.name", node)},
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("--otlp-endpoint %q: %w", f.otlp, err)
	}
	defer tel.Shutdown(context.WithoutCancel(ctx))
	opts := f.eng.options()
	opts.Comm = comm
	wopts := worker.Options{
		Role: f.role, Group: f.g.group, Incarnation: f.g.incarnation, ModelName: modelName, Model: m, Engine: opts,
		Listener: ln, AdvertiseAddr: f.advertise, Etcd: cli, Registerer: reg, Telemetry: tel,
		OnReady: probes.setReady, ServerTLS: f.g.tls.serverTLS(), ClientTLS: f.g.tls.clientTLS(),
	}
	if gpu, err := metrics.OpenGPU(f.be.gpu); err == nil { // absent without an NVIDIA driver
		defer gpu.Close()
		wopts.GPU = gpu
	}
	return worker.Run(ctx, wopts)
}

// checkShardable reports whether the model in dir splits over tp ranks.
func checkShardable(dir string, tp int) error {
	cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return err
	}
	_, err = engine.ShardPlan(cfg, engine.Shard{TP: tp})
	return err
}

// serveMetrics serves reg's /metrics and the probes on addr until stop;
// it says where.
func serveMetrics(addr string, reg *prometheus.Registry, probes *rankProbes, w io.Writer) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %q: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg))
	probes.register(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Fprintf(w, "metrics at http://%s/metrics\n", ln.Addr())
	return func() { srv.Close() }, nil
}

// servedModel are the flags choosing the model a cluster process serves.
type servedModel struct{ dir, preset, name string }

func (m *servedModel) register(fl *pflag.FlagSet, dirHelp string) {
	fl.StringVar(&m.dir, "model", "", dirHelp)
	fl.StringVar(&m.preset, "preset", "", "preset model (created in the cache directory on first use)")
	fl.StringVar(&m.name, "model-name", "", "model id served (default: the preset name or the model directory's base name)")
}

// resolve returns the model directory and the id it is served under.
func (m *servedModel) resolve(ctx context.Context) (dir, name string, err error) {
	dir, err = resolveModelDir(ctx, m.dir, m.preset)
	if err != nil {
		return "", "", err
	}
	if name = m.name; name == "" {
		name = defaultModelName(dir, m.preset)
	}
	return dir, name, nil
}

// defaultModelName is the model id a cluster serves a directory under.
func defaultModelName(dir, preset string) string {
	if preset != "" {
		return preset
	}
	return filepath.Base(filepath.Clean(dir))
}

// dialEtcd dials etcd, with the cluster's mutual TLS when t is set, and
// roots every key under prefix (--etcd-prefix; "" for none).
func dialEtcd(endpoints, prefix string, t *internalTLS) (*clientv3.Client, error) {
	if err := cluster.CheckPrefix(prefix); err != nil {
		return nil, fmt.Errorf("--etcd-prefix: %w", err)
	}
	cli, err := cluster.DialTLS(strings.Split(endpoints, ","), t.clientTLS())
	if err != nil {
		return nil, fmt.Errorf("--etcd-endpoints %q: %w", endpoints, err)
	}
	if err := cluster.Namespace(cli, prefix); err != nil {
		cli.Close()
		return nil, fmt.Errorf("--etcd-prefix: %w", err)
	}
	return cli, nil
}

// etcdPrefixHelp is the help of --etcd-prefix, the same on every command.
const etcdPrefixHelp = "root of every key this cluster keeps in etcd (e.g. /NAMESPACE/RELEASE), so clusters sharing one etcd keep apart; every process of a cluster must be given the same (empty: none)"

func (g *groupFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.IntVar(&g.tp, "tp", 1, "tensor-parallel degree of the group")
	fl.IntVar(&g.rank, "rank", 0, "this process's rank in the group")
	fl.StringVar(&g.group, "group", "", "group name, shared by all its ranks")
	fl.IntVar(&g.incarnation, "incarnation", 0, "the group's start count, raised by its supervisor at each restart: ranks meet only ranks of the same incarnation")
	fl.StringVar(&g.etcdEndpoints, "etcd-endpoints", "", "comma-separated etcd client URLs")
	fl.StringVar(&g.etcdPrefix, "etcd-prefix", "", etcdPrefixHelp)
	fl.StringVar(&g.listen, "listen", "127.0.0.1:0", "address of this rank's collective endpoint")
	fl.DurationVar(&g.joinTimeout, "join-timeout", time.Minute, "how long to wait for the group's other ranks")
}

// engineFlags are the engine options exposed on the command line.
type engineFlags struct {
	maxBatchTokens int
	kvCacheMB      int
	kvCacheDType   kvDTypeFlag
	noPrefixCache  bool
	detailed       string // --collect-detailed-traces
}

func (f *engineFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.IntVar(&f.maxBatchTokens, "max-batch-tokens", 512, "rows per step, also the prefill chunk size")
	fl.IntVar(&f.kvCacheMB, "kv-cache-mb", 512, "KV cache memory budget in MiB")
	f.kvCacheDType = kvDTypeFlag(engine.KVAuto)
	fl.Var(&f.kvCacheDType, "kv-cache-dtype", "KV cache element type: auto (the weights' dtype on the CPU, as vLLM's auto; bf16 on CUDA), fp32, bf16 or fp16 (CPU only)")
	fl.BoolVar(&f.noPrefixCache, "no-prefix-caching", false, "turn the prefix cache off: compute every prompt from scratch and keep no KV block after its request")
	fl.StringVar(&f.detailed, "collect-detailed-traces", "", "comma-separated: model (every step's trace gets the forward pass's time per op: q_proj, attention, lm_head, ...; a clock read per op, and on a GPU a wait for the queue after each, which slows the step), worker (the step records kept anyway), all")
}

// validate checks the flags; each error names its flag.
func (f *engineFlags) validate() error {
	switch {
	case f.maxBatchTokens < 1:
		return fmt.Errorf("--max-batch-tokens %d: must be >= 1", f.maxBatchTokens)
	case f.kvCacheMB < 1:
		return fmt.Errorf("--kv-cache-mb %d: must be >= 1", f.kvCacheMB)
	}
	if f.detailed != "" {
		for m := range strings.SplitSeq(f.detailed, ",") {
			if m != "model" && m != "worker" && m != "all" {
				return fmt.Errorf("--collect-detailed-traces %q: want a comma-separated list of model, worker and all", f.detailed)
			}
		}
	}
	return nil
}

// opTimes reports whether --collect-detailed-traces asks for the model's
// per-op times.
func (f *engineFlags) opTimes() bool {
	for m := range strings.SplitSeq(f.detailed, ",") {
		if m == "model" || m == "all" {
			return true
		}
	}
	return false
}

func (f *engineFlags) options() engine.Options {
	return engine.Options{MaxBatchTokens: f.maxBatchTokens, KVCacheBytes: int64(f.kvCacheMB) << 20,
		KVCacheDType: engine.KVCacheDType(f.kvCacheDType), DisablePrefixCaching: f.noPrefixCache, OpTimes: f.opTimes()}
}

// args are the flags that give a child `tandem worker` these options.
func (f *engineFlags) args() []string {
	args := []string{"--max-batch-tokens", strconv.Itoa(f.maxBatchTokens), "--kv-cache-mb", strconv.Itoa(f.kvCacheMB),
		"--kv-cache-dtype", f.kvCacheDType.String()}
	if f.noPrefixCache {
		args = append(args, "--no-prefix-caching")
	}
	if f.detailed != "" {
		args = append(args, "--collect-detailed-traces", f.detailed)
	}
	return args
}

// kvDTypeFlag is --kv-cache-dtype: a bad value is refused when the flag is
// parsed, with the flag's name.
type kvDTypeFlag engine.KVCacheDType

func (v *kvDTypeFlag) String() string { return string(*v) }
func (v *kvDTypeFlag) Type() string   { return "auto|fp32|bf16|fp16" }
func (v *kvDTypeFlag) Set(s string) error {
	d, err := engine.ParseKVCacheDType(s)
	if err != nil {
		return errors.New("want auto, fp32, bf16 or fp16")
	}
	*v = kvDTypeFlag(d)
	return nil
}

// joinGroup connects this rank to its group's ring through an etcd
// rendezvous. The rank's entry lives on a lease kept alive only while it
// joins and revoked once its ring is connected (every rank that dials it
// has read it by then), so a restarted group finds no stale address even
// where its incarnation stays 0 (a Kubernetes restart): a rank that dies
// while joining leaves its entry for a lease TTL at most.
func joinGroup(ctx context.Context, g *groupFlags) (nccl.Communicator, error) {
	cli, err := dialEtcd(g.etcdEndpoints, g.etcdPrefix, g.tls)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	var ln *ring.Listener
	listen := func() (err error) {
		ln, err = ring.Listen(g.listen)
		return err
	}
	if g.listenIn != nil {
		err = g.listenIn(listen)
	} else {
		err = listen()
	}
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", g.listen, err)
	}
	jctx, cancel := context.WithTimeout(ctx, g.joinTimeout)
	defer cancel()
	lease, err := cli.Grant(jctx, int64(cluster.DefaultMemberTTL/time.Second))
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("a lease for the rendezvous of %s: %w", g.group, err)
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer rcancel()
		_, _ = cli.Revoke(rctx, lease.ID) // failing that, it expires
	}()
	if _, err := cli.KeepAlive(jctx, lease.ID); err != nil {
		ln.Close()
		return nil, fmt.Errorf("keeping the rendezvous lease of %s: %w", g.group, err)
	}
	addrs, err := cluster.Rendezvous(jctx, cli, cluster.Member{Group: g.group, Size: g.tp, Rank: g.rank, Value: ln.Addr(),
		Incarnation: g.incarnation, Lease: lease.ID})
	if err != nil {
		ln.Close()
		return nil, err
	}
	// The incarnation is part of the ring's group id, so a rank of a dead
	// incarnation that still dials is refused at the handshake.
	// Ranks on one host share memory for their allreduces unless
	// NCCL_SHM_DISABLE=1, NCCL's own switch for its SHM transport.
	return ring.Connect(jctx, ln, g.rank, addrs, ring.Options{Group: fmt.Sprintf("%s#%d", g.group, g.incarnation),
		ServerTLS: g.tls.serverTLS(), ClientTLS: g.tls.clientTLS(), DisableSharedMemory: os.Getenv("NCCL_SHM_DISABLE") == "1"})
}

// openShard joins the group (when TP > 1) and loads this rank's shard of
// the model; closeAll releases everything in reverse order. The backend
// says on w which one started.
func openShard(ctx context.Context, dir string, g *groupFlags, bf *backendFlags, w io.Writer) (*engine.Model, nccl.Communicator, func(), error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	fail := func(err error) (*engine.Model, nccl.Communicator, func(), error) {
		closeAll()
		return nil, nil, nil, err
	}
	var comm nccl.Communicator
	if g.tp > 1 {
		c, err := joinGroup(ctx, g)
		if err != nil {
			return fail(err)
		}
		closers = append(closers, func() { c.Close() })
		comm = c
		// Says which transport the allreduces took, as NCCL_DEBUG=INFO's
		// "via SHM" does: a TP comparison depends on it.
		allreduce := "over TCP"
		if sc, ok := c.(interface{ SharedMemory() bool }); ok && sc.SharedMemory() {
			allreduce = "through shared memory (NCCL_SHM_DISABLE=1: over TCP)"
		}
		fmt.Fprintf(w, "collectives: rank %d of %d, allreduces %s\n", g.rank, g.tp, allreduce)
	}
	be, err := bf.open(w)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { be.Close() })
	m, err := engine.Open(dir, be, engine.Shard{TP: g.tp, Rank: g.rank})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { m.Close() })
	return m, comm, closeAll, nil
}
