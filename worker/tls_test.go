package worker

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/internal/grpctest"
	"github.com/tandemllm/tandem/internal/syncbuf"
	"github.com/tandemllm/tandem/kvtransfer"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/parallel"
	"github.com/tandemllm/tandem/pki/pkitest"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// TestWorkersOverMutualTLS: a prefill and a decode worker whose gRPC,
// raw KV data plane and connections to each other are mutual TLS serve a
// disaggregated request as plain ones do; an internal call and a KV push
// without a certificate, or with one another CA signed, are each refused
// and logged, and the workers go on serving. Both answer the standard
// health service (SERVING) and list their services by reflection.
func TestWorkersOverMutualTLS(t *testing.T) {
	dir, err := preset.Ensure(t.Context(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ca, other := pkitest.NewCA(t, "prefill", "decode", "coordinator"), pkitest.NewCA(t, "coordinator")
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	start := func(role cluster.Role) string {
		server, client := pkitest.Configs(t, ca, string(role))
		return startWorkerWith(t, dir, Options{Role: role, Group: string(role) + "-0", ModelName: "tiny",
			Engine: engine.Options{KVCacheBytes: 16 << 20}, KVTimeout: 30 * time.Second, Logger: log,
			ServerTLS: server, ClientTLS: client})
	}
	dec, pre := start(cluster.RoleDecode), start(cluster.RolePrefill)
	_, coord := pkitest.Configs(t, ca, "coordinator")
	member := grpc.WithTransportCredentials(credentials.NewTLS(coord))
	prompt := []int32{5, 6, 7, 8, 9, 10, 11, 12}
	want := aloneGreedy(t, dir, prompt, 4)
	if got := disaggregated(t, pre, dec, dec, "tls-1", prompt, 4, member); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("over mutual TLS: %v, want %v", got, want)
	}

	_, stranger := pkitest.Configs(t, other, "coordinator")
	stranger.VerifyPeerCertificate = nil // it would refuse the worker first: only the worker decides here
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config // nil: plain TCP
	}{{"plain TCP", nil}, {"no certificate", noCert}, {"another CA", stranger}} {
		t.Run(tc.name, func(t *testing.T) {
			before := strings.Count(logs.String(), "refused a connection at its TLS handshake")
			creds := insecure.NewCredentials()
			if tc.cfg != nil {
				creds = credentials.NewTLS(tc.cfg)
			}
			for _, addr := range []string{pre, dec} {
				cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				_, err = tandemv1.NewWorkerClient(cc).Stats(ctx, &tandemv1.StatsRequest{})
				cancel()
				cc.Close()
				if err == nil {
					t.Fatalf("Worker.Stats at %s succeeded", addr)
				}
			}
			s := kvtransfer.NewSender(kvtransfer.SenderOptions{MaxAttempts: 1, TLS: tc.cfg})
			defer s.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			heads := parallel.Range{From: 0, To: 8}
			_, err := s.Push(ctx, zeroSource{}, kvtransfer.SendSpec{RequestID: "stranger", Attempt: 1, DestAddr: dec,
				Layers: 2, Tokens: 4, Heads: heads, HeadDim: 32})
			if err == nil {
				t.Fatal("a KV push from outside the cluster succeeded")
			}
			if tc.cfg == nil {
				return // plain TCP: refused as a TLS handshake, logged below for the others
			}
			// The client may see the refusal before the worker logs it.
			if text, err := logs.Await(ctx, func(s string) bool {
				return strings.Count(s, "refused a connection at its TLS handshake") > before
			}); err != nil {
				t.Fatalf("the decode rank did not log the refusals: %v\n%s", err, text)
			}
		})
	}
	if got := disaggregated(t, pre, dec, dec, "tls-2", prompt, 4, member); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the strangers: %v, want %v", got, want)
	}

	for _, addr := range []string{pre, dec} {
		cc, err := grpc.NewClient(addr, member)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		resp, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%s: health %v, %v; want SERVING", addr, resp.GetStatus(), err)
		}
		services := grpctest.ListServices(t, cc)
		for _, want := range []string{"tandem.v1.Rank", "tandem.v1.Worker", "grpc.health.v1.Health"} {
			if !slices.Contains(services, want) {
				t.Fatalf("%s lists %v by reflection, without %s", addr, services, want)
			}
		}
	}
}

// zeroSource is a kvtransfer.Source of zeros.
type zeroSource struct{}

func (zeroSource) ReadLayer(int, parallel.Range, []byte) error { return nil }

// A rank's health service says NOT_SERVING while the rank cannot take
// part in serving (here: its rank is still held in etcd, so it has not
// registered) and SERVING once it has joined.
func TestHealthFollowsReadiness(t *testing.T) {
	dir, err := preset.Ensure(t.Context(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	etcd, err := cluster.StartEmbedded(ctx, t.TempDir(), cluster.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	dial := func() *clientv3.Client {
		cli, err := cluster.Dial(etcd.Endpoints())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	// A live holder of the rank: the worker waits for it (two lease TTLs
	// and two seconds) before giving up.
	holder := dial()
	const ttl = 2 * time.Second
	if _, err := cluster.Register(ctx, holder, cluster.Registration{Role: cluster.RoleUnified, Group: "u", TP: 1, Addr: "127.0.0.1:1", Model: "tiny", KVBlockSize: 16}, ttl); err != nil {
		t.Fatal(err)
	}
	addr := startWorkerWith(t, dir, Options{Role: cluster.RoleUnified, Group: "u", ModelName: "tiny", Etcd: dial(), LeaseTTL: ttl,
		Engine: engine.Options{KVCacheBytes: 16 << 20}})
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil || first.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("before the rank registered: %v, %v; want NOT_SERVING", first.GetStatus(), err)
	}
	if err := cluster.Forget(ctx, holder, "u"); err != nil { // the holder goes: the rank registers
		t.Fatal(err)
	}
	for {
		next, err := watch.Recv()
		if err != nil {
			t.Fatalf("waiting for SERVING: %v", err)
		}
		if next.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
	}
}
