package main

// Tests of the standard service interfaces: gRPC health and reflection,
// the HTTP probes, and --protect-metrics.

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/apikey"
	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/internal/grpctest"
	"github.com/tandemllm/tandem/model/preset"
)

// TestCoordinatorHealthAndReflection runs `tandem coordinator` and the
// two ranks of a TP-2 group as processes: grpcurl-style discovery lists
// the coordinator's services by reflection, and its grpc.health.v1.Health
// says NOT_SERVING (HTTP /readyz 503, /healthz 200) until the group is
// ready, SERVING once it is, and NOT_SERVING again when the group dies.
// Rank 0 alone is live (/healthz 200) and not ready (/readyz 503) until
// its group forms; then each rank's gRPC port lists its services by
// reflection and its health service says SERVING.
func TestCoordinatorHealthAndReflection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	c := startCoordinatorProcess(t)
	dir, etcd, endpoints, out, httpURL, grpcAddr := c.model, c.etcd, c.endpoints, c.out, c.http, c.grpc
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	services := grpctest.ListServices(t, conn)
	for _, want := range []string{"tandem.v1.Generation", "tandem.v1.Traces", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(services, want) {
			t.Fatalf("reflection lists %v, without %s", services, want)
		}
	}
	probe := func(path string) int {
		resp, err := http.Get(httpURL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	watch, err := healthpb.NewHealthClient(conn).Watch(t.Context(), &healthpb.HealthCheckRequest{Service: "tandem.v1.Generation"})
	if err != nil {
		t.Fatal(err)
	}
	next := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for {
			r, err := watch.Recv()
			if err != nil {
				t.Fatalf("waiting for %v: %v", want, err)
			}
			if r.GetStatus() == want {
				return
			}
		}
	}
	next(healthpb.HealthCheckResponse_NOT_SERVING)
	if r, h := probe("/readyz"), probe("/healthz"); r != 503 || h != 200 {
		t.Fatalf("without groups: /readyz %d, /healthz %d; want 503, 200", r, h)
	}
	// A TP-2 group whose rank 1 is not there yet: rank 0 is alive
	// (/healthz) and not ready (/readyz), and the coordinator waits.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	worker := func(rank int, extra ...string) *process {
		return startProcess(t, append([]string{"worker", "--role", "unified", "--group", "u-0", "--tp", "2", "--rank", strconv.Itoa(rank),
			"--etcd-endpoints", endpoints, "--model", dir, "--model-name", "tiny", "--threads", "1", "--kv-cache-mb", "16"}, extra...), out)
	}
	port := freePorts(t, 1)
	rank0 := fmt.Sprintf("http://127.0.0.1:%d", port)
	w0 := worker(0, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port))
	waitHTTP(ctx, t, rank0+"/healthz", http.StatusOK, nil)
	if resp, err := http.Get(rank0 + "/readyz"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("rank 0 alone: /readyz %v %v, want 503", resp, err)
	}
	if r := probe("/readyz"); r != 503 {
		t.Fatalf("with a group half up: coordinator /readyz %d", r)
	}
	worker(1)
	next(healthpb.HealthCheckResponse_SERVING)
	if r := probe("/readyz"); r != 200 {
		t.Fatalf("with a ready group: /readyz %d", r)
	}
	waitHTTP(ctx, t, rank0+"/readyz", http.StatusOK, nil)
	// Each rank's own gRPC port: reflection and health, as grpcurl and a
	// kubelet gRPC probe see them.
	checkRanksDiscoverable(t, etcd.Endpoints())
	_ = w0.cmd.Process.Kill() // its lease expires: the group leaves
	next(healthpb.HealthCheckResponse_NOT_SERVING)
}

// checkRanksDiscoverable lists each registered rank's services by
// reflection and waits for its health service to say SERVING.
func checkRanksDiscoverable(t *testing.T, endpoints []string) {
	t.Helper()
	cli, err := cluster.Dial(endpoints)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	groups := groupsIn(t, cli)
	if len(groups) != 1 || len(groups[0].Ranks) != 2 {
		t.Fatalf("groups %+v, want one of 2 ranks", groups)
	}
	for _, r := range groups[0].Ranks {
		conn, err := grpc.NewClient(r.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		services := grpctest.ListServices(t, conn)
		for _, want := range []string{"tandem.v1.Rank", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
			if !slices.Contains(services, want) {
				t.Fatalf("rank at %s lists %v by reflection, without %s", r.Addr, services, want)
			}
		}
		// A follower turns SERVING a moment after it registers (see
		// worker.Options.OnReady), so rank 0 can be ready first: wait for
		// it, within the test's deadline.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			h, err := watch.Recv()
			if err != nil {
				t.Fatalf("rank at %s: health %v, %v; want SERVING", r.Addr, h.GetStatus(), err)
			}
			if h.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				break
			}
		}
	}
}

// coordinatorProcess is `tandem coordinator` running as a process, with
// an embedded etcd of its own and the tiny preset as its model.
type coordinatorProcess struct {
	model, endpoints string
	etcd             *cluster.Embedded
	out              *syncBuffer
	http, grpc       string // http://HOST:PORT, HOST:PORT
}

// startCoordinatorProcess starts etcd and `tandem coordinator ARGS` on
// free ports and waits for its endpoints.
func startCoordinatorProcess(t *testing.T, args ...string) *coordinatorProcess {
	t.Helper()
	dir, err := preset.Ensure(t.Context(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	etcd, err := cluster.StartEmbedded(t.Context(), t.TempDir(), cluster.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	c := &coordinatorProcess{model: dir, etcd: etcd, endpoints: strings.Join(etcd.Endpoints(), ","), out: &syncBuffer{}}
	lw := &lineWatch{w: c.out, field: "HTTP", found: make(chan string, 1)}
	coord := startProcess(t, append([]string{"coordinator", "--etcd-endpoints", c.endpoints, "--model", dir, "--model-name", "tiny",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, args...), lw)
	select {
	case c.http = <-lw.found:
	case <-coord.done:
		t.Fatalf("the coordinator exited: %v\n%s", coord.err, c.out)
	case <-time.After(time.Minute):
		t.Fatalf("the coordinator printed no endpoints\n%s", c.out)
	}
	c.http = strings.TrimSuffix(c.http, "/v1")
	for _, line := range strings.Split(c.out.String(), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "gRPC" {
			c.grpc = f[1]
		}
	}
	return c
}

// TestProtectMetrics: with --protect-metrics the probes, /metrics and
// the gRPC health service need the key like the rest (401 /
// UNAUTHENTICATED without it), and answer as usual with it.
func TestProtectMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator process")
	}
	const key = "protect-key-0e71"
	c := startCoordinatorProcess(t, "--api-key", key, "--protect-metrics")
	for _, path := range []string{"/healthz", "/livez", "/readyz", "/metrics"} {
		for _, tc := range []struct {
			key  string
			want int
		}{{"", 401}, {"wrong", 401}, {key, 200}} {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, c.http+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.key != "" {
				req.Header.Set("Authorization", "Bearer "+tc.key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := tc.want
			if path == "/readyz" && want == 200 {
				want = 503 // no group yet: the probe itself answers
			}
			if resp.StatusCode != want {
				t.Fatalf("%s with key %q: %d, want %d", path, tc.key, resp.StatusCode, want)
			}
		}
	}
	conn, err := grpc.NewClient(c.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	if _, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("gRPC health without a key: %v, want UNAUTHENTICATED", err)
	}
	h, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{}, grpc.PerRPCCredentials(apikey.PerRPC(key)))
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("gRPC health with the key: %v, %v; want NOT_SERVING (no group)", h.GetStatus(), err)
	}
}
