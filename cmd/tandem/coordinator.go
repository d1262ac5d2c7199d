package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tandemllm/tandem/coordinator"
	"github.com/tandemllm/tandem/metrics"
	"github.com/tandemllm/tandem/telemetry"
	"github.com/tandemllm/tandem/traceui"
	"github.com/tandemllm/tandem/tracing"
)

// coordinatorFlags are the flags of `tandem coordinator` (and of the
// coordinator `tandem up` runs).
type coordinatorFlags struct {
	grpcAddr, httpAddr string
	maxInFlight        int
	queueTimeout       time.Duration
	migrationLimit     int
	migrationTimeout   time.Duration
	otlpEndpoint       string
	prefixWeight       float64
	loadWeight         float64
	maxRequests        int
	maxModelLen        int
	writeTimeout       time.Duration
	public             publicFlags
}

func (f *coordinatorFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:9090", "listen address of the gRPC API (tandem.v1.Generation)")
	fl.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:8080", "listen address of the OpenAI-compatible HTTP API")
	fl.IntVar(&f.maxInFlight, "max-in-flight", 256, "requests admitted at once; more are refused (RESOURCE_EXHAUSTED, HTTP 429)")
	fl.DurationVar(&f.queueTimeout, "queue-timeout", 0, "how long an admitted request may wait for a group to schedule it; past it, RESOURCE_EXHAUSTED (HTTP 429) (0: no limit)")
	fl.IntVar(&f.migrationLimit, "migration-limit", 3, "times a request may move to other groups after a group failed it (0: never)")
	fl.DurationVar(&f.migrationTimeout, "migration-timeout", 30*time.Second, "how long a request whose group failed may look for healthy groups, all its migrations together")
	fl.StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "OTLP/gRPC collector (host:port) to export OpenTelemetry spans to; empty: no export")
	fl.Float64Var(&f.prefixWeight, "prefix-score-weight", 2, "routing: weight of the share of a prompt a group holds in its prefix cache (0: route by load alone)")
	fl.Float64Var(&f.loadWeight, "load-score-weight", 1, "routing: weight of a group's load, 0..1 (0: route by cached prefix alone, load breaking ties)")
	fl.IntVar(&f.maxRequests, "group-max-requests", 256, "routing: requests in flight on a group (running and waiting) at which it is skipped while another is below (0: no limit)")
	fl.IntVar(&f.maxModelLen, "max-model-len", 0, "longest prompt plus max_tokens a request may ask for, at most the model's context length (0: the model's)")
	fl.DurationVar(&f.writeTimeout, "write-timeout", 30*time.Second, "a client that reads nothing of its response for this long is cut off and its request aborted, freeing its KV blocks")
	f.public.register(fl)
}

// validate checks the flags; each error names its flag.
func (f *coordinatorFlags) validate() error {
	switch {
	case f.maxInFlight < 1:
		return fmt.Errorf("--max-in-flight %d: must be >= 1", f.maxInFlight)
	case f.queueTimeout < 0:
		return fmt.Errorf("--queue-timeout %v: must be >= 0 (0: no limit)", f.queueTimeout)
	case f.migrationLimit < 0:
		return fmt.Errorf("--migration-limit %d: must be >= 0", f.migrationLimit)
	case f.migrationTimeout < 0:
		return fmt.Errorf("--migration-timeout %v: must be >= 0 (0: the default, 30s)", f.migrationTimeout)
	case f.prefixWeight < 0 || f.loadWeight < 0:
		return fmt.Errorf("--prefix-score-weight %g and --load-score-weight %g: must be >= 0", f.prefixWeight, f.loadWeight)
	case f.maxRequests < 0:
		return fmt.Errorf("--group-max-requests %d: must be >= 0 (0: no limit)", f.maxRequests)
	case f.maxModelLen < 0:
		return fmt.Errorf("--max-model-len %d: must be >= 0 (0: the model's context length)", f.maxModelLen)
	case f.writeTimeout < 0:
		return fmt.Errorf("--write-timeout %v: must be >= 0 (0: the default, 30s)", f.writeTimeout)
	}
	return nil
}

// routing is the coordinator's routing options from the flags (whose 0
// means off, where the options' zero means the default).
func (f *coordinatorFlags) routing() coordinator.RoutingOptions {
	off := func(v float64) float64 {
		if v == 0 {
			return -1
		}
		return v
	}
	limit := f.maxRequests
	if limit == 0 {
		limit = -1
	}
	return coordinator.RoutingOptions{PrefixWeight: off(f.prefixWeight), LoadWeight: off(f.loadWeight), MaxRequests: limit}
}

// runningCoordinator is a coordinator serving on its two listeners.
type runningCoordinator struct {
	stopOnce sync.Once
	c        *coordinator.Coordinator
	tel      *telemetry.Provider
	grpcSrv  *grpc.Server
	httpSrv  *http.Server
	grpcAddr string
	httpAddr string
	tls      bool // the public listeners are TLS
	errs     chan error
	stopHUP  func()
}

// startCoordinator listens on both addresses and serves until stop;
// internal, when set, is the mutual TLS of its connections to workers.
func startCoordinator(ctx context.Context, f *coordinatorFlags, cli *clientv3.Client, dir, name string, internal *internalTLS) (*runningCoordinator, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	keys, public, err := f.public.load()
	if err != nil {
		return nil, err
	}
	migrations := f.migrationLimit
	if migrations == 0 {
		migrations = -1 // Options' zero is the default
	}
	gl, err := net.Listen("tcp", f.grpcAddr)
	if err != nil {
		return nil, fmt.Errorf("--grpc-addr %q: %w", f.grpcAddr, err)
	}
	hl, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		gl.Close()
		return nil, fmt.Errorf("--http-addr %q: %w", f.httpAddr, err)
	}
	hl = sendBufferListener{hl}
	tel, err := telemetry.Setup(ctx, telemetry.Options{Endpoint: f.otlpEndpoint, ServiceName: "tandem-coordinator"})
	if err != nil {
		gl.Close()
		hl.Close()
		return nil, fmt.Errorf("--otlp-endpoint %q: %w", f.otlpEndpoint, err)
	}
	reg := metrics.NewRegistry()
	copts := coordinator.Options{
		Etcd: cli, ModelDir: dir, ModelName: name, MaxInFlight: f.maxInFlight, Registerer: reg, Telemetry: tel,
		MigrationLimit: migrations, MigrationTimeout: f.migrationTimeout, QueueTimeout: f.queueTimeout, Routing: f.routing(),
		WorkerTLS: internal.clientTLS(), ProtectMetrics: f.public.protectMetrics, MaxModelLen: f.maxModelLen, WriteTimeout: f.writeTimeout,
	}
	if keys != nil { // a nil *apikey.Set in the interface would not be nil
		copts.APIKeys = keys
	}
	c, err := coordinator.New(ctx, copts)
	if err != nil {
		_ = tel.Shutdown(ctx)
		gl.Close()
		hl.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg))
	mux.Handle("/ui/", traceui.Handler(traceui.Options{Source: c, Perfetto: tracing.WritePerfetto}))
	mux.Handle("/", c.HTTPHandler())
	gopts := append(tel.ServerOptions(), c.ServerOptions()...)
	hsrv := &http.Server{Handler: c.RequireAPIKey(mux), ReadHeaderTimeout: 10 * time.Second}
	if public != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(public.ServerConfig())))
		hsrv.TLSConfig = public.ServerConfig("h2", "http/1.1")
	}
	rc := &runningCoordinator{
		c: c, tel: tel, grpcSrv: grpc.NewServer(gopts...), httpSrv: hsrv, tls: public != nil,
		grpcAddr: gl.Addr().String(), httpAddr: hl.Addr().String(), errs: make(chan error, 2), stopHUP: reloadKeysOnHUP(keys),
	}
	c.Register(rc.grpcSrv)
	go func() { rc.errs <- rc.grpcSrv.Serve(gl) }()
	go func() {
		serve := func() error { return rc.httpSrv.Serve(hl) }
		if public != nil {
			serve = func() error { return rc.httpSrv.ServeTLS(hl, "", "") } // the certificate comes from TLSConfig
		}
		if err := serve(); !errors.Is(err, http.ErrServerClosed) {
			rc.errs <- err
		}
	}()
	return rc, nil
}

// stop ends both servers, giving calls in flight a few seconds each to
// finish, then closing what is left (open SSE streams included).
// Idempotent.
func (rc *runningCoordinator) stop() { rc.stopOnce.Do(rc.stopNow) }

func (rc *runningCoordinator) stopNow() {
	rc.stopHUP()
	const grace = 3 * time.Second
	hctx, hcancel := context.WithTimeout(context.Background(), grace)
	defer hcancel()
	if rc.httpSrv.Shutdown(hctx) != nil {
		_ = rc.httpSrv.Close()
	}
	done := make(chan struct{})
	go func() { rc.grpcSrv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		rc.grpcSrv.Stop()
	}
	rc.c.Close()
	tctx, tcancel := context.WithTimeout(context.Background(), grace)
	defer tcancel()
	_ = rc.tel.Shutdown(tctx)
}

// httpSendBuffer is the send buffer of every HTTP connection: room for
// any token stream, and small enough that a client that stops reading
// fills it within seconds, so that --write-timeout sees it (a buffer the
// kernel grows on its own can take megabytes first).
const httpSendBuffer = 256 << 10

// sendBufferListener gives each accepted TCP connection httpSendBuffer.
type sendBufferListener struct{ net.Listener }

func (l sendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(httpSendBuffer)
	}
	return c, err
}

func (rc *runningCoordinator) printEndpoints(w io.Writer) {
	scheme, tlsFlag := "http", ""
	if rc.tls {
		scheme, tlsFlag = "https", " --tls"
	}
	fmt.Fprintf(w, "gRPC  %s  (tandem generate --addr %s%s \"...\")\n", rc.grpcAddr, rc.grpcAddr, tlsFlag)
	fmt.Fprintf(w, "HTTP  %s://%s/v1  (OpenAI-compatible: /v1/completions, /v1/chat/completions, /v1/models)\n", scheme, rc.httpAddr)
	fmt.Fprintf(w, "      %s://%s/ui/  (recent requests and their cross-node timelines), /metrics\n", scheme, rc.httpAddr)
}

func newCoordinatorCmd() *cobra.Command {
	var (
		f             coordinatorFlags
		etcdEndpoints string
		etcdPrefix    string
		model         servedModel
		internal      internalFlags
	)
	cmd := &cobra.Command{
		Use:   "coordinator --etcd-endpoints URLS (--model DIR | --preset NAME)",
		Short: "Serve the cluster's public APIs and route requests to worker groups",
		Long: `Serve the public gRPC API (tandem.v1.Generation) and the OpenAI-compatible
HTTP API, watch the worker groups registered in etcd, and route every request
to a prefill group and then a decode group (or to a unified group). The
coordinator tokenizes and detokenizes with the model directory's tokenizer.

--api-key and --api-keys-file (re-read on SIGHUP) require
"Authorization: Bearer KEY" (gRPC: the authorization metadata) on every
request but the probes and /metrics (--protect-metrics: those too);
--tls-cert and --tls-key serve both APIs over TLS; --internal-ca,
--internal-cert and --internal-key make its connections to etcd and the
workers mutual TLS. Both ports serve grpc.health.v1.Health (gRPC) or
/healthz and /readyz (HTTP), and the gRPC port server reflection
(docs/security.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if etcdEndpoints == "" {
				return errors.New("--etcd-endpoints is required")
			}
			if err := f.validate(); err != nil {
				return err
			}
			ctx := cmd.Context()
			dir, modelName, err := model.resolve(ctx)
			if err != nil {
				return err
			}
			itls, err := internal.load()
			if err != nil {
				return err
			}
			cli, err := dialEtcd(etcdEndpoints, etcdPrefix, itls)
			if err != nil {
				return err
			}
			defer cli.Close()
			rc, err := startCoordinator(ctx, &f, cli, dir, modelName, itls)
			if err != nil {
				return err
			}
			defer rc.stop()
			rc.printEndpoints(cmd.OutOrStdout())
			select {
			case <-ctx.Done():
				return nil
			case err := <-rc.errs:
				return err
			}
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&etcdEndpoints, "etcd-endpoints", "", "comma-separated etcd client URLs")
	fl.StringVar(&etcdPrefix, "etcd-prefix", "", etcdPrefixHelp)
	model.register(fl, "model directory (its config.json and tokenizer.json are used)")
	internal.register(fl)
	return cmd
}
