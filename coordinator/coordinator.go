package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/metrics"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/telemetry"
	"github.com/tandemllm/tandem/tracing"
)

// Options configure New. Zero fields take the documented defaults.
type Options struct {
	// Etcd is the cluster's etcd client, where workers register; required.
	Etcd *clientv3.Client
	// ModelDir is the served model's directory, holding config.json and
	// tokenizer.json; required.
	ModelDir string
	// ModelName is the model id served (ListModels, GenerateRequest.model,
	// the OpenAI "model"); groups serve it when they register this name.
	// Default: the base name of ModelDir.
	ModelName string
	// MaxInFlight bounds the requests admitted (running and queued) at
	// once; beyond it requests get RESOURCE_EXHAUSTED (HTTP 429) at once.
	// Default 256.
	MaxInFlight int
	// QueueTimeout bounds how long an admitted request may wait, from its
	// arrival, before a group schedules its first step; past it the group
	// drops it and the client gets RESOURCE_EXHAUSTED (HTTP 429), as for a
	// full coordinator. Default 0: no limit.
	QueueTimeout time.Duration
	// MigrationLimit bounds how many times one request moves to other
	// groups after a group failed it (see migrate.go); beyond it the
	// request fails with UNAVAILABLE. Default 3; negative: never.
	MigrationLimit int
	// MigrationTimeout bounds the time a request spends looking for
	// healthy groups after its first failure, all its migrations
	// together. Default 30s.
	MigrationTimeout time.Duration
	// StatsInterval is how often every ready group's Stats are polled for
	// routing. Default 200ms.
	StatsInterval time.Duration
	// Routing weighs how much of a prompt a group holds in its prefix
	// cache against its load (see "Routing" in the package doc).
	Routing RoutingOptions
	// DialOptions are added after the coordinator's own when it dials
	// workers (interceptors, for instance).
	DialOptions []grpc.DialOption
	// WorkerTLS, when set, makes the connections to workers TLS with this
	// client configuration (mutual TLS against the cluster's CA: package
	// pki). Default nil: plain TCP.
	WorkerTLS *tls.Config
	// APIKeys, when set, guard the public APIs (see "Authentication" in
	// the package doc): a request without a key it accepts is refused
	// with UNAUTHENTICATED / HTTP 401. Default nil: no authentication.
	APIKeys KeyChecker
	// ProtectMetrics puts /metrics and the health probes behind the API
	// keys too. Default false: they stay open for scrapers and probes.
	ProtectMetrics bool
	// MaxModelLen caps a request's prompt plus max_tokens, below the
	// model's context length (vLLM's --max-model-len). Default 0: the
	// model's context length.
	MaxModelLen int
	// WriteTimeout bounds how long one response write to a client may
	// take: a client that reads nothing for that long is cut off and its
	// request aborted on its groups, freeing its KV blocks. Default 30s.
	WriteTimeout time.Duration
	// Logger receives the coordinator's logs. Default slog.Default().
	Logger *slog.Logger
	// TraceHistory is how many recent requests are kept for traces
	// (GetTrace, ListRequests). Default 1000.
	TraceHistory int
	// Registerer receives the coordinator's Prometheus metrics (see
	// docs/metrics.md). Default: a registry of its own, not served.
	Registerer prometheus.Registerer
	// Telemetry exports OpenTelemetry spans and carries the W3C trace
	// context to the workers. Default nil: no spans, no propagation.
	Telemetry *telemetry.Provider
}

// Coordinator serves the public APIs of a Tandem cluster: it tokenizes,
// routes each request to worker groups, streams the tokens back with
// their text, and tracks every request to its end. It is safe for
// concurrent use.
type Coordinator struct {
	opts    Options
	log     *slog.Logger
	model   *modelInfo
	members *cluster.Membership
	created time.Time
	stop    context.CancelFunc
	wg      sync.WaitGroup

	metrics *metrics.Coordinator
	tracer  trace.Tracer
	history *history
	clockMu sync.Mutex
	clocks  map[string]tracing.ClockEstimate // by rank address

	grpcHealth    *health.Server
	healthServing bool          // the status last set, under mu
	routingMoved  chan struct{} // closed and replaced when routability may have changed, under mu

	mu       sync.Mutex
	closing  bool // Close has begun: requests no longer migrate
	inflight map[string]struct{}
	groups   map[string]*groupState
	conns    map[string]*grpc.ClientConn // by worker address, shared by groups
	index    *prefixIndex
}

// New loads the model's tokenizer and config.json, starts watching the
// cluster's membership and polling the groups' load. ctx bounds only the
// start; Close stops the coordinator.
func New(ctx context.Context, opts Options) (*Coordinator, error) {
	if opts.Etcd == nil {
		return nil, errors.New("coordinator: Options.Etcd is required")
	}
	if opts.ModelDir == "" {
		return nil, errors.New("coordinator: Options.ModelDir is required")
	}
	if opts.ModelName == "" {
		opts.ModelName = filepath.Base(filepath.Clean(opts.ModelDir))
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 256
	}
	switch {
	case opts.MigrationLimit == 0:
		opts.MigrationLimit = 3
	case opts.MigrationLimit < 0:
		opts.MigrationLimit = 0
	}
	if opts.MigrationTimeout <= 0 {
		opts.MigrationTimeout = 30 * time.Second
	}
	if opts.StatsInterval <= 0 {
		opts.StatsInterval = 200 * time.Millisecond
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	opts.Routing.defaults()
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.TraceHistory <= 0 {
		opts.TraceHistory = 1000
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	m, err := loadModel(opts.ModelDir, opts.ModelName)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	if opts.MaxModelLen > 0 {
		if opts.MaxModelLen > m.maxPositions {
			return nil, fmt.Errorf("coordinator: max model length %d exceeds the model's context length of %d tokens", opts.MaxModelLen, m.maxPositions)
		}
		m.maxPositions = opts.MaxModelLen
	}
	// The background work outlives ctx, which bounds only the start.
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	members, err := watchMembership(ctx, bg, opts.Etcd)
	if err != nil {
		stop()
		return nil, fmt.Errorf("coordinator: watching membership: %w", err)
	}
	c := &Coordinator{
		opts:       opts,
		log:        opts.Logger.With("component", "coordinator"),
		model:      m,
		members:    members,
		created:    time.Now(),
		stop:       stop,
		inflight:   make(map[string]struct{}),
		history:    newHistory(opts.TraceHistory),
		metrics:    metrics.NewCoordinator(opts.Registerer, opts.ModelName),
		tracer:     opts.Telemetry.Tracer("github.com/tandemllm/tandem/coordinator"),
		clocks:     make(map[string]tracing.ClockEstimate),
		groups:     make(map[string]*groupState),
		conns:      make(map[string]*grpc.ClientConn),
		index:      newPrefixIndex(),
		grpcHealth: health.NewServer(),
	}
	for _, name := range []string{"", tandemv1.Generation_ServiceDesc.ServiceName} {
		c.grpcHealth.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	c.sync(bg, members.Groups())
	c.wg.Go(func() { c.watch(bg) })
	c.wg.Go(func() { c.pollStats(bg) })
	c.wg.Go(func() { c.keepClocks(bg) })
	return c, nil
}

// watchMembership starts the watch under bg, so that it lives until
// Close, while ctx still bounds the wait for its first snapshot.
func watchMembership(ctx, bg context.Context, cli *clientv3.Client) (*cluster.Membership, error) {
	wctx, cancel := context.WithCancel(bg)
	stopBound := context.AfterFunc(ctx, cancel)
	m, err := cluster.WatchMembership(wctx, cli)
	if !stopBound() {
		// ctx ended during the start and cancelled the watch.
		if err == nil {
			m.Close()
		}
		return nil, ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return m, nil
}

// Register registers the Generation and Traces services on s, with the
// standard grpc.health.v1.Health service, SERVING exactly when the model
// can be served (a ready group of every role it needs), and server
// reflection. Build s with ServerOptions, which authenticate its calls.
func (c *Coordinator) Register(s *grpc.Server) {
	tandemv1.RegisterGenerationServer(s, generationServer{c: c})
	tandemv1.RegisterTracesServer(s, tracesServer{c: c})
	healthpb.RegisterHealthServer(s, c.grpcHealth)
	reflection.Register(s)
}

// Close stops watching the cluster and polling, and closes the
// connections to workers; requests still running fail.
func (c *Coordinator) Close() {
	// Groups are left first, so running requests end with this cause
	// rather than a bare cancellation.
	c.grpcHealth.Shutdown()
	c.mu.Lock()
	c.closing = true
	for _, g := range c.groups {
		g.leave(errors.New("coordinator closed"))
	}
	c.mu.Unlock()
	c.stop()
	c.members.Close()
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.groups)
	for addr, cc := range c.conns {
		cc.Close()
		delete(c.conns, addr)
	}
}

// generationServer adapts the Coordinator to the generated service
// interface, keeping the Unimplemented embedding out of the public type.
type generationServer struct {
	tandemv1.UnimplementedGenerationServer
	c *Coordinator
}

func (s generationServer) Generate(req *tandemv1.GenerateRequest, stream grpc.ServerStreamingServer[tandemv1.GenerateResponse]) error {
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	err := s.c.generate(ctx, req, false, s.c.boundWrites(cancel, stream.Send))
	if errors.Is(context.Cause(ctx), errSlowClient) {
		return status.Error(codes.DeadlineExceeded, errSlowClient.Error())
	}
	return err
}

// errSlowClient ends a request whose client stopped reading.
var errSlowClient = errors.New("the client read nothing for the write timeout; the request was aborted")

// boundWrites makes send cancel the request (cancel) when one call takes
// longer than WriteTimeout. A gRPC Send blocks while the client reads
// nothing and cannot be interrupted; cancelling the request instead ends
// its calls to the workers, which free its KV blocks at once, and the
// stream ends as soon as Send returns.
func (c *Coordinator) boundWrites(cancel context.CancelCauseFunc, send func(*tandemv1.GenerateResponse) error) func(*tandemv1.GenerateResponse) error {
	return func(m *tandemv1.GenerateResponse) error {
		t := time.AfterFunc(c.opts.WriteTimeout, func() {
			c.log.Warn("a client read nothing for the write timeout; its request is aborted", "write_timeout", c.opts.WriteTimeout)
			cancel(errSlowClient)
		})
		err := send(m)
		if !t.Stop() {
			return errSlowClient
		}
		return err
	}
}

func (s generationServer) ListModels(context.Context, *tandemv1.ListModelsRequest) (*tandemv1.ListModelsResponse, error) {
	return s.c.listModels(), nil
}

func (s generationServer) Health(context.Context, *tandemv1.HealthRequest) (*tandemv1.HealthResponse, error) {
	return s.c.health(), nil
}

func (c *Coordinator) listModels() *tandemv1.ListModelsResponse {
	return &tandemv1.ListModelsResponse{Models: []*tandemv1.Model{{
		Id:            c.model.name,
		OwnedBy:       "tandem",
		ContextLength: int32(c.model.maxPositions),
		Created:       timestamppb.New(c.created),
	}}}
}

// health counts the registered and ready groups of every role (of any
// model) and says whether this coordinator's model can be served.
func (c *Coordinator) health() *tandemv1.HealthResponse {
	c.mu.Lock()
	defer c.mu.Unlock()
	roles := []tandemv1.Role{tandemv1.Role_ROLE_PREFILL, tandemv1.Role_ROLE_DECODE, tandemv1.Role_ROLE_UNIFIED}
	counts := make(map[tandemv1.Role]*tandemv1.RoleGroups)
	for _, g := range c.groups {
		r := g.group.Role.Proto()
		rg := counts[r]
		if rg == nil {
			rg = &tandemv1.RoleGroups{Role: r}
			counts[r] = rg
		}
		rg.Total++
		if c.routable(g) { // all ranks joined and its load known: requests can go there
			rg.Ready++
		}
	}
	resp := &tandemv1.HealthResponse{Status: tandemv1.ServingStatus_SERVING_STATUS_SERVING}
	for _, r := range roles {
		if rg := counts[r]; rg != nil {
			resp.Groups = append(resp.Groups, rg)
		}
	}
	if err := c.servableLocked(); err != nil {
		resp.Status, resp.Message = tandemv1.ServingStatus_SERVING_STATUS_NOT_SERVING, err.Error()
	}
	return resp
}
