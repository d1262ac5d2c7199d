package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/kvtransfer"
	"github.com/tandemllm/tandem/metrics"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/telemetry"
	"github.com/tandemllm/tandem/tracing"
)

// Options configure a worker rank. Zero fields take the documented
// defaults.
type Options struct {
	// Role is what the group does.
	Role cluster.Role
	// Group names the rank's group; ModelName is the model id it serves.
	Group, ModelName string
	// Incarnation is the group's start count, given by its supervisor
	// (cluster.Member.Incarnation); registered with the rank.
	Incarnation int
	// Model is this rank's shard, loaded; Engine configures the engine Run
	// makes for it (Comm is required when the model is sharded).
	Model  *engine.Model
	Engine engine.Options
	// Listener is where the rank's gRPC server serves; required.
	Listener net.Listener
	// AdvertiseAddr is the address registered for others to dial
	// (default: the listener's address).
	AdvertiseAddr string
	// Etcd registers the rank (role, group, address, KV capacity) under a
	// lease; nil skips registration, which only a single-rank group in a
	// test can do without.
	Etcd *clientv3.Client
	// LeaseTTL is the registration's lease (default 5s): how long a dead
	// rank stays visible.
	LeaseTTL time.Duration
	// KVTimeout bounds a KV transfer: a decode waits this long for its KV
	// before recomputing the prompt, a prefill holds a prompt's KV this
	// long at most while pushing it, and KV pushed to this rank that no
	// decode claims within it is dropped (default 30s).
	KVTimeout time.Duration
	// TraceSteps is the flight recorder's capacity in steps (default 4096).
	TraceSteps int
	// Registerer receives the rank's Prometheus metrics (see
	// docs/metrics.md). Default: a registry of its own, not served.
	Registerer prometheus.Registerer
	// GPU, if set, is sampled into the metrics and the step records.
	GPU *metrics.GPU
	// Telemetry exports OpenTelemetry spans and carries the W3C trace
	// context between processes. Default nil: no spans, no propagation.
	Telemetry *telemetry.Provider
	// ShutdownTimeout bounds the graceful stop (default 5s).
	ShutdownTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// OnReady, if set, is called once the rank can take part in serving:
	// a follower once it is registered, rank 0 once every rank of its
	// group is registered and connected (a readiness probe's signal). The
	// rank's grpc.health.v1.Health service turns SERVING at the same time.
	OnReady func()
	// ServerTLS and ClientTLS, when set (both, or neither), make the rank's
	// gRPC server, its raw KV data plane and its connections to other
	// ranks TLS: mutual TLS against the cluster's CA (package pki) refuses
	// a peer without a certificate of the cluster before any of its bytes
	// is parsed. Default nil: plain TCP.
	ServerTLS, ClientTLS *tls.Config
}

// Worker is a running rank.
type Worker struct {
	opts   Options
	log    *slog.Logger
	srv    *grpc.Server
	health *health.Server

	// Built by Run's first step.
	engine  *engine.Engine
	leader  *leader // rank 0 only
	rank    *rankServer
	metrics *metrics.Worker
}

// rankAPI is the Rank service as the leader calls it: in process for
// itself, over gRPC for the others.
type rankAPI interface {
	SendKV(context.Context, *tandemv1.SendKVRequest) (*tandemv1.SendKVResponse, error)
	LoadKV(context.Context, *tandemv1.LoadKVRequest) (*tandemv1.LoadKVResponse, error)
	DropKV(context.Context, *tandemv1.DropKVRequest) (*tandemv1.DropKVResponse, error)
}

// remoteRank adapts a Rank client to rankAPI.
type remoteRank struct{ c tandemv1.RankClient }

func (r remoteRank) SendKV(ctx context.Context, req *tandemv1.SendKVRequest) (*tandemv1.SendKVResponse, error) {
	return r.c.SendKV(ctx, req)
}

func (r remoteRank) LoadKV(ctx context.Context, req *tandemv1.LoadKVRequest) (*tandemv1.LoadKVResponse, error) {
	return r.c.LoadKV(ctx, req)
}

func (r remoteRank) DropKV(ctx context.Context, req *tandemv1.DropKVRequest) (*tandemv1.DropKVResponse, error) {
	return r.c.DropKV(ctx, req)
}

func (o *Options) validate() error {
	switch {
	case !o.Role.Valid():
		return fmt.Errorf("worker: role %q: must be prefill, decode or unified", o.Role)
	case o.Group == "":
		return errors.New("worker: group name is required")
	case o.Model == nil:
		return errors.New("worker: no model")
	case o.Listener == nil:
		return errors.New("worker: no listener")
	case o.Model.Plan().TP > 1 && o.Etcd == nil:
		return errors.New("worker: a group of more than one rank needs etcd to find its ranks")
	case (o.ServerTLS == nil) != (o.ClientTLS == nil):
		return errors.New("worker: ServerTLS and ClientTLS must be set together")
	}
	if o.ModelName == "" {
		o.ModelName = "default"
	}
	if o.AdvertiseAddr == "" {
		o.AdvertiseAddr = o.Listener.Addr().String()
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 5 * time.Second
	}
	if o.KVTimeout <= 0 {
		o.KVTimeout = 30 * time.Second
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	return nil
}

// Run serves the rank until ctx ends (a clean stop: the leader tells the
// other ranks to finish, in-flight requests end with UNAVAILABLE) or the
// group fails. It closes the listener.
func Run(ctx context.Context, opts Options) error {
	if err := opts.validate(); err != nil {
		return err
	}
	w := &Worker{opts: opts, log: opts.Logger.With("group", opts.Group, "rank", opts.Model.Plan().Rank)}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if err := w.build(); err != nil {
		return err
	}
	defer w.rank.sender.Close()
	defer w.serve()()
	if opts.Etcd != nil {
		leave, err := w.join(ctx, cancel)
		if err != nil {
			return err
		}
		defer leave()
	}
	w.log.Info("worker serving", "role", opts.Role, "addr", opts.AdvertiseAddr, "tp", opts.Model.Plan().TP, "backend", opts.Model.Backend().Name())
	if w.leader == nil {
		return w.follow(ctx)
	}
	return w.lead(ctx)
}

// build makes the rank's engine with its step hooks (flight recorder,
// metrics, and on rank 0 the leader's), its Rank service and, on rank 0,
// its leader.
func (w *Worker) build() error {
	opts, plan := &w.opts, w.opts.Model.Plan()
	eopts := opts.Engine
	if eopts.ModelID == "" {
		eopts.ModelID = opts.ModelName // what the coordinator hashes prompts with
	}
	rec := tracing.NewRecorder(opts.TraceSteps)
	wm := metrics.NewWorker(opts.Registerer, metrics.WorkerLabels{Model: opts.ModelName, Group: opts.Group, Role: string(opts.Role), Rank: plan.Rank,
		Backend: opts.Model.Backend().Name()})
	if opts.GPU != nil {
		if err := wm.AttachGPU(opts.GPU); err != nil {
			w.log.Warn("GPU telemetry", "err", err)
		}
	}
	tracer := &stepTracer{rec: rec, metrics: wm, gpu: opts.GPU, group: opts.Group, rank: plan.Rank}
	if plan.Rank != 0 && opts.Telemetry.Enabled() {
		tracer.followerSpans = opts.Telemetry.Tracer("github.com/tandemllm/tandem/worker")
	}
	var l *leader
	if plan.Rank == 0 {
		l = newLeader(w, nil)
		eopts.BeforeForward = l.beforeForward
	}
	user := eopts.OnStep
	eopts.OnStep = func(r *engine.StepRecord) {
		if l != nil {
			l.onStep(r)
		}
		tracer.onStep(r)
		if user != nil {
			user(r)
		}
	}
	e, err := engine.New(opts.Model, eopts)
	if err != nil {
		return err
	}
	node, err := os.Hostname()
	if err != nil {
		node = "unknown"
	}
	w.engine, w.metrics = e, wm
	w.rank = newRankServer(e, opts.Role, rec, wm, node, opts.Telemetry.DialOptions(), opts.ClientTLS, opts.KVTimeout)
	if l != nil {
		l.e, l.metrics = e, wm
		l.events = newKVEvents(opts.Group, e.BlockSize())
		l.publishLoad()
		l.tracer = opts.Telemetry.Tracer("github.com/tandemllm/tandem/worker")
		l.spans = opts.Telemetry.Enabled()
		w.leader = l
	}
	return nil
}

// serve starts the rank's gRPC server (NOT_SERVING until ready) and, on
// a rank that receives KV, the raw KV data plane on the same port. The
// function it returns turns the health service NOT_SERVING, then stops
// the server gracefully, or at once after ShutdownTimeout.
func (w *Worker) serve() (stop func()) {
	rs := w.rank
	srv := w.newServer(rs.receiver != nil)
	w.srv = srv
	tandemv1.RegisterRankServer(srv, rs)
	if rs.receiver != nil {
		tandemv1.RegisterKVTransferServer(srv, rs.receiver)
	}
	if w.leader != nil {
		tandemv1.RegisterWorkerServer(srv, w.leader)
	}
	w.setHealth(srv, healthpb.HealthCheckResponse_NOT_SERVING)
	if rs.receiver != nil { // gRPC and the raw KV data plane share the port
		grpcLis, rawLis := kvtransfer.Mux(w.opts.Listener, kvtransfer.MuxOptions{TLS: w.opts.ServerTLS, Logger: w.log})
		go func() { _ = srv.Serve(grpcLis) }() // stopping srv closes both
		go func() { _ = rs.receiver.ServeRaw(rawLis) }()
	} else {
		go func() { _ = srv.Serve(w.opts.Listener) }()
	}
	return func() {
		w.health.Shutdown()
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(w.opts.ShutdownTimeout):
			srv.Stop()
		}
	}
}

// join registers the rank under a lease and follows the registration
// (watchRegistration, which calls stop if the rank is taken). leave
// stops following first, so that a normal stop is not taken for a lost
// rank, then revokes the lease.
func (w *Worker) join(ctx context.Context, stop context.CancelFunc) (leave func(), err error) {
	opts, plan := &w.opts, w.opts.Model.Plan()
	_, total := w.engine.KVBlocks()
	reg, err := register(ctx, opts.Etcd, cluster.Registration{
		Role: opts.Role, Group: opts.Group, Rank: plan.Rank, TP: plan.TP, Addr: opts.AdvertiseAddr,
		Model: opts.ModelName, KVBlocks: total, KVBlockSize: w.engine.BlockSize(), Incarnation: opts.Incarnation,
	}, opts.LeaseTTL)
	if err != nil {
		return nil, fmt.Errorf("worker: registering rank %d of %s: %w", plan.Rank, opts.Group, err)
	}
	wctx, unwatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		w.watchRegistration(wctx, reg, stop)
	}()
	return func() {
		unwatch()
		<-watched
		rctx, rcancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
		defer rcancel()
		_ = reg.Close(rctx)
	}, nil
}

// follow runs a rank other than 0 until the leader ends the group or ctx
// ends; either is a clean stop.
func (w *Worker) follow(ctx context.Context) error {
	w.ready()
	err := w.engine.Follow(ctx)
	if errors.Is(err, engine.ErrShutdown) || ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("worker: rank %d of group %s: %w", w.opts.Model.Plan().Rank, w.opts.Group, err)
}

// lead runs rank 0: it connects to the group's other ranks, runs the
// scheduler until ctx ends or the group fails, and on a clean stop tells
// the other ranks to finish.
func (w *Worker) lead(ctx context.Context) error {
	ranks, closeRanks, err := dialRanks(ctx, w.opts, w.rank)
	if err != nil {
		return err
	}
	defer closeRanks()
	w.leader.ranks = ranks
	w.ready()
	runErr := w.leader.run(ctx)
	if w.opts.Model.Plan().TP > 1 && runErr == nil {
		sctx, scancel := context.WithTimeout(context.Background(), w.opts.ShutdownTimeout)
		defer scancel()
		if err := w.engine.Shutdown(sctx); err != nil {
			w.log.Warn("telling the other ranks to stop", "err", err)
		}
	}
	return runErr
}

// serverKeepalive has the rank ping a client (the coordinator, another
// group's leader) that has sent nothing for 10 s and drop the connection
// when the ping is not answered within 5 s: the calls of a caller that
// vanished without closing its connections (a host lost, a network cut)
// are cancelled, so their requests are aborted and their KV freed, within
// 15 s. A caller killed outright closes its connections at once.
var serverKeepalive = []grpc.ServerOption{
	grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
}

// watchRegistration follows the rank's registration until ctx ends:
// while etcd does not answer, the rank serves on (a warning,
// tandem:etcd_available 0); it stops the rank only when the registration
// ended under it (another process holds its rank, or its etcd client
// was closed), never for its own Close.
func (w *Worker) watchRegistration(ctx context.Context, reg *cluster.Registered, stop context.CancelFunc) {
	for {
		ok, changed, _ := reg.Available()
		w.metrics.EtcdAvailable(ok)
		select {
		case <-ctx.Done():
			return
		case <-reg.Lost():
			switch err := reg.Err(); {
			case ctx.Err() != nil || err == nil: // a normal stop
			case errors.Is(err, cluster.ErrRankTaken):
				w.log.Error("another process holds this rank's registration; stopping")
				stop()
			default:
				w.log.Error("the rank's registration ended; stopping", "err", err)
				stop()
			}
			return
		case <-changed:
			if now, _, why := reg.Available(); now {
				w.log.Info("etcd answers again; the rank's registration is kept alive")
			} else {
				w.log.Warn("etcd does not answer; serving on, registered as before", "err", why)
			}
		}
	}
}

// register registers the rank. A rank still held is retried for two
// lease TTLs and two seconds (etcd expires leases a little late, and
// never under 1.5 s): that is a dead predecessor's entry (a rank
// restarted without its supervisor clearing etcd, as under Kubernetes)
// waiting for its lease to expire; a rank still held after that is held
// by a live process.
func register(ctx context.Context, cli *clientv3.Client, r cluster.Registration, ttl time.Duration) (*cluster.Registered, error) {
	deadline := time.Now().Add(2*ttl + 2*time.Second)
	for {
		reg, err := cluster.Register(ctx, cli, r, ttl)
		if !errors.Is(err, cluster.ErrRankTaken) || time.Now().After(deadline) {
			return reg, err
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
	}
}

func (w *Worker) ready() {
	w.setHealth(w.srv, healthpb.HealthCheckResponse_SERVING)
	if w.opts.OnReady != nil {
		w.opts.OnReady()
	}
}

// dialOptions are how a worker dials other workers: plain TCP or TLS,
// with the trace context carried along.
func (o *Options) dialOptions() []grpc.DialOption {
	creds := insecure.NewCredentials()
	if o.ClientTLS != nil {
		creds = credentials.NewTLS(o.ClientTLS)
	}
	return append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, o.Telemetry.DialOptions()...)
}

// dialRanks waits for the leader's group to be complete in etcd and
// connects to every other rank's Rank service.
func dialRanks(ctx context.Context, opts Options, self rankAPI) ([]rankAPI, func(), error) {
	tp := opts.Model.Plan().TP
	ranks := []rankAPI{self}
	if tp == 1 {
		return ranks, func() {}, nil
	}
	m, err := cluster.WatchMembership(ctx, opts.Etcd)
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	g, err := m.WaitReady(ctx, opts.Group)
	if err != nil {
		return nil, nil, fmt.Errorf("worker: waiting for the ranks of %s: %w", opts.Group, err)
	}
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for _, reg := range g.Ranks[1:] {
		c, err := grpc.NewClient(reg.Addr, opts.dialOptions()...)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("worker: rank %d at %s: %w", reg.Rank, reg.Addr, err)
		}
		conns = append(conns, c)
		ranks = append(ranks, remoteRank{tandemv1.NewRankClient(c)})
	}
	return ranks, closeAll, nil
}
