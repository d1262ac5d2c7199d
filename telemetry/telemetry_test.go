package telemetry_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tandemllm/tandem/telemetry"
	"github.com/tandemllm/tandem/telemetry/otlptest"
)

const checkMethod = "grpc.health.v1.Health/Check"

func setup(ctx context.Context, t *testing.T, opts telemetry.Options) *telemetry.Provider {
	t.Helper()
	p, err := telemetry.Setup(ctx, opts)
	if err != nil {
		t.Fatalf("Setup(%+v): %v", opts, err)
	}
	// Tests shut down explicitly to flush; this covers early failures.
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p
}

// server serves the health service with p's instrumentation, recording the
// span context each handler sees on seen; stop waits for the handlers (and so
// for their server spans to end).
func server(t *testing.T, p *telemetry.Provider, seen chan<- trace.SpanContext) (addr string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		select {
		case seen <- trace.SpanContextFromContext(ctx):
		default:
		}
		return h(ctx, req)
	}
	opts := append(p.ServerOptions(), grpc.WaitForHandlers(true), grpc.UnaryInterceptor(record))
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), srv.GracefulStop
}

func check(ctx context.Context, t *testing.T, p *telemetry.Provider, addr string) {
	t.Helper()
	opts := append(p.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func isTrace(b []byte, id trace.TraceID) bool { return bytes.Equal(b, id[:]) }
func isSpan(b []byte, id trace.SpanID) bool   { return bytes.Equal(b, id[:]) }

func only(t *testing.T, spans []otlptest.Span, what string) otlptest.Span {
	t.Helper()
	if len(spans) != 1 {
		t.Fatalf("%s: got %d spans, want 1", what, len(spans))
	}
	return spans[0]
}

func TestExportAcrossGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rcv := otlptest.Start(t)
	client := setup(ctx, t, telemetry.Options{Endpoint: rcv.Addr(), ServiceName: "tandem-coordinator", BatchTimeout: 10 * time.Millisecond})
	worker := setup(ctx, t, telemetry.Options{
		Endpoint:     rcv.Addr(),
		ServiceName:  "tandem-worker",
		Attributes:   []attribute.KeyValue{telemetry.Group("decode-0"), telemetry.Rank(1)},
		BatchTimeout: 10 * time.Millisecond,
	})
	if !client.Enabled() || !worker.Enabled() {
		t.Fatal("Enabled() = false with an endpoint")
	}
	addr, stop := server(t, worker, nil)

	opCtx, op := client.Tracer("test").Start(ctx, "client-op")
	check(opCtx, t, client, addr)
	op.End()
	stop()
	for _, p := range []*telemetry.Provider{client, worker} {
		if err := p.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	}

	spans, err := rcv.WaitFor(ctx, func(s []otlptest.Span) bool { return len(s) >= 3 })
	if err != nil {
		t.Fatal(err)
	}
	if len(spans) != 3 {
		t.Fatalf("got %d spans, want 3", len(spans))
	}
	clientOp := only(t, otlptest.ByName(spans, "client-op"), "client-op")
	clientRPC := only(t, otlptest.ChildrenOf(spans, clientOp), "children of client-op")
	serverRPC := only(t, otlptest.ChildrenOf(spans, clientRPC), "children of the client RPC")

	if len(clientOp.GetParentSpanId()) != 0 {
		t.Errorf("client-op has parent %x, want a root", clientOp.GetParentSpanId())
	}
	for _, tc := range []struct {
		span    otlptest.Span
		name    string
		kind    tracepb.Span_SpanKind
		service string
	}{
		{clientOp, "client-op", tracepb.Span_SPAN_KIND_INTERNAL, "tandem-coordinator"},
		{clientRPC, checkMethod, tracepb.Span_SPAN_KIND_CLIENT, "tandem-coordinator"},
		{serverRPC, checkMethod, tracepb.Span_SPAN_KIND_SERVER, "tandem-worker"},
	} {
		s := tc.span
		if s.GetName() != tc.name || s.GetKind() != tc.kind || s.Service != tc.service {
			t.Errorf("span %q kind %v service %q, want %q %v %q", s.GetName(), s.GetKind(), s.Service, tc.name, tc.kind, tc.service)
		}
		if !bytes.Equal(s.GetTraceId(), clientOp.GetTraceId()) {
			t.Errorf("span %q (%v) trace id %x, want client-op's %x", s.GetName(), s.GetKind(), s.GetTraceId(), clientOp.GetTraceId())
		}
	}
	if g, r := serverRPC.Resource["tandem.group"], serverRPC.Resource["tandem.rank"]; g != "decode-0" || r != "1" {
		t.Errorf("worker resource tandem.group=%q tandem.rank=%q, want decode-0 and 1", g, r)
	}
	if _, ok := clientOp.Resource["tandem.group"]; ok {
		t.Error("coordinator resource has the worker's tandem.group")
	}
}

// TestPropagationWithoutExport checks that with export off (on one side or
// both) the W3C context still crosses gRPC: the server handler sees the
// client's trace id.
func TestPropagationWithoutExport(t *testing.T) {
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	for _, tc := range []struct {
		name string
		// remoteParent puts client-op under a context that arrived from
		// outside (as a user's traceparent would), instead of a new root.
		remoteParent bool
		serverExport bool
	}{
		{name: "both off, new root"},
		{name: "both off, remote parent", remoteParent: true},
		{name: "client off, server on", serverExport: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rcv := otlptest.Start(t)
			client := setup(ctx, t, telemetry.Options{ServiceName: "tandem-coordinator"})
			serverOpts := telemetry.Options{ServiceName: "tandem-worker"}
			if tc.serverExport {
				serverOpts.Endpoint, serverOpts.BatchTimeout = rcv.Addr(), 10*time.Millisecond
			}
			worker := setup(ctx, t, serverOpts)
			if client.Enabled() {
				t.Fatal("Enabled() = true without an endpoint")
			}
			seen := make(chan trace.SpanContext, 1)
			addr, stop := server(t, worker, seen)

			parent := ctx
			if tc.remoteParent {
				parent = trace.ContextWithRemoteSpanContext(ctx, remote)
			}
			opCtx, op := client.Tracer("test").Start(parent, "client-op")
			if op.IsRecording() {
				t.Error("client-op is recording with export off")
			}
			sc := op.SpanContext()
			if !sc.IsValid() {
				t.Fatal("client-op has no span context with export off")
			}
			if tc.remoteParent && sc.TraceID() != remote.TraceID() {
				t.Errorf("client-op trace id %s, want the remote parent's %s", sc.TraceID(), remote.TraceID())
			}
			check(opCtx, t, client, addr)
			op.End()
			stop()

			var got trace.SpanContext
			select {
			case got = <-seen:
			case <-ctx.Done():
				t.Fatal("the server handler never ran")
			}
			if got.TraceID() != sc.TraceID() {
				t.Errorf("server sees trace id %s, want the client's %s", got.TraceID(), sc.TraceID())
			}
			if got.SpanID() == sc.SpanID() || !got.SpanID().IsValid() {
				t.Errorf("server span id %s, want its own span (client-op is %s)", got.SpanID(), sc.SpanID())
			}

			if err := worker.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if !tc.serverExport {
				if n := len(rcv.Spans()); n != 0 {
					t.Errorf("receiver got %d spans with export off", n)
				}
				return
			}
			spans, err := rcv.WaitFor(ctx, func(s []otlptest.Span) bool { return len(s) >= 1 })
			if err != nil {
				t.Fatal(err)
			}
			s := only(t, spans, "exported spans")
			if s.GetName() != checkMethod || s.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
				t.Errorf("exported %q %v, want the server RPC span", s.GetName(), s.GetKind())
			}
			if !isTrace(s.GetTraceId(), sc.TraceID()) {
				t.Errorf("server span trace id %x, want the client's %s", s.GetTraceId(), sc.TraceID())
			}
			if p := s.GetParentSpanId(); len(p) == 0 || isSpan(p, sc.SpanID()) {
				t.Errorf("server span parent %x, want the client's (unexported) RPC span", p)
			}
		})
	}
}

func TestStepSpan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rcv := otlptest.Start(t)
	p := setup(ctx, t, telemetry.Options{Endpoint: rcv.Addr(), ServiceName: "tandem-worker", BatchTimeout: 10 * time.Millisecond})
	tr := p.Tracer("test")

	r1Ctx, r1 := tr.Start(ctx, "request-1")
	_, r2 := tr.Start(ctx, "request-2")
	start := time.Now().Add(-5 * time.Millisecond)
	// r1 is current in the context: the step must still not be its child.
	step := telemetry.StepSpan(r1Ctx, tr, start,
		[]trace.Link{telemetry.LinkTo(r1.SpanContext(), telemetry.StepPrefillTokensKey.Int(5)), telemetry.LinkTo(r2.SpanContext())},
		telemetry.StepAttrs(7, 5, 1)...)
	step.End()
	r1.End()
	r2.End()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	spans, err := rcv.WaitFor(ctx, func(s []otlptest.Span) bool { return len(otlptest.ByName(s, "step")) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	s := only(t, otlptest.ByName(spans, "step"), "step")
	if len(s.GetParentSpanId()) != 0 {
		t.Errorf("step has parent %x, want a root", s.GetParentSpanId())
	}
	if isTrace(s.GetTraceId(), r1.SpanContext().TraceID()) {
		t.Error("step is in request-1's trace, want its own")
	}
	if s.GetKind() != tracepb.Span_SPAN_KIND_INTERNAL {
		t.Errorf("step kind %v, want internal", s.GetKind())
	}
	if got, want := s.GetStartTimeUnixNano(), uint64(start.UnixNano()); got != want {
		t.Errorf("step starts at %d, want %d", got, want)
	}
	if v, _ := otlptest.Attr(s, "tandem.step"); v != int64(7) {
		t.Errorf("tandem.step = %v, want 7", v)
	}
	links := s.GetLinks()
	if len(links) != 2 {
		t.Fatalf("step has %d links, want 2", len(links))
	}
	for i, r := range []trace.Span{r1, r2} {
		sc := r.SpanContext()
		if !isTrace(links[i].GetTraceId(), sc.TraceID()) || !isSpan(links[i].GetSpanId(), sc.SpanID()) {
			t.Errorf("link %d to %x/%x, want request-%d %s/%s", i, links[i].GetTraceId(), links[i].GetSpanId(), i+1, sc.TraceID(), sc.SpanID())
		}
	}
	if a := links[0].GetAttributes(); len(a) != 1 || a[0].GetKey() != "tandem.step.prefill_tokens" || a[0].GetValue().GetIntValue() != 5 {
		t.Errorf("link 0 attributes %v, want tandem.step.prefill_tokens=5", a)
	}
}

func TestPropagator(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    *telemetry.Provider
	}{
		{"provider", setup(context.Background(), t, telemetry.Options{})},
		{"nil provider", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := trace.NewSpanContext(trace.SpanContextConfig{
				TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
				SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
				TraceFlags: trace.FlagsSampled,
			})
			m, err := baggage.NewMember("tandem.request.id", "r-1")
			if err != nil {
				t.Fatal(err)
			}
			b, err := baggage.New(m)
			if err != nil {
				t.Fatal(err)
			}
			ctx := baggage.ContextWithBaggage(trace.ContextWithSpanContext(context.Background(), sc), b)
			carrier := propagation.MapCarrier{}
			tc.p.Propagator().Inject(ctx, carrier)
			if got, want := carrier.Get("traceparent"), "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"; got != want {
				t.Errorf("traceparent %q, want %q", got, want)
			}
			if got := carrier.Get("baggage"); got != "tandem.request.id=r-1" {
				t.Errorf("baggage %q, want tandem.request.id=r-1", got)
			}
			out := tc.p.Propagator().Extract(context.Background(), carrier)
			if got := trace.SpanContextFromContext(out); got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() {
				t.Errorf("extracted %s/%s, want %s/%s", got.TraceID(), got.SpanID(), sc.TraceID(), sc.SpanID())
			}
		})
	}
}

func TestNilProvider(t *testing.T) {
	var p *telemetry.Provider
	if p.Enabled() || p.ServerOptions() != nil || p.DialOptions() != nil {
		t.Error("nil provider is enabled or has gRPC options")
	}
	if _, span := p.Tracer("test").Start(context.Background(), "x"); span.IsRecording() {
		t.Error("nil provider records")
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestSetupBadEndpoint(t *testing.T) {
	for _, ep := range []string{"localhost", "http://localhost:4317/v1"} {
		if p, err := telemetry.Setup(context.Background(), telemetry.Options{Endpoint: ep}); err == nil {
			_ = p.Shutdown(context.Background())
			t.Errorf("Setup(Endpoint %q) succeeded, want an error", ep)
		}
	}
}
