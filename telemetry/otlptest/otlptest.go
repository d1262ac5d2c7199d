package otlptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	// Exporters may be configured (OTEL_EXPORTER_OTLP_COMPRESSION) to gzip.
	_ "google.golang.org/grpc/encoding/gzip"
)

// Span is one received span with the resource and scope it came under.
type Span struct {
	// Service is the resource's service.name.
	Service string
	// Resource holds the resource attributes, values formatted as strings.
	Resource map[string]string
	// Scope is the instrumentation scope (tracer) name.
	Scope string
	*tracepb.Span
}

// Receiver is a running OTLP/gRPC trace receiver.
type Receiver struct {
	coltracepb.UnimplementedTraceServiceServer

	addr string

	mu    sync.Mutex
	spans []Span
	// arrived is closed, and replaced, whenever spans arrive: a broadcast
	// that wakes every WaitFor.
	arrived chan struct{}
}

// Start listens on 127.0.0.1, serves until the test ends, and fails the test
// if serving fails.
func Start(tb testing.TB) *Receiver {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("otlptest: listen: %v", err)
	}
	r := &Receiver{addr: lis.Addr().String(), arrived: make(chan struct{})}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, r)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			tb.Errorf("otlptest: serve: %v", err)
		}
	})
	return r
}

// Addr is the receiver's host:port, for an exporter's endpoint.
func (r *Receiver) Addr() string { return r.addr }

// Export implements the OTLP TraceService.
func (r *Receiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		res := make(map[string]string, len(rs.GetResource().GetAttributes()))
		for _, kv := range rs.GetResource().GetAttributes() {
			res[kv.GetKey()] = fmt.Sprint(value(kv.GetValue()))
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				got = append(got, Span{
					Service:  res["service.name"],
					Resource: res,
					Scope:    ss.GetScope().GetName(),
					Span:     s,
				})
			}
		}
	}
	if len(got) == 0 {
		return &coltracepb.ExportTraceServiceResponse{}, nil
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	close(r.arrived)
	r.arrived = make(chan struct{})
	r.mu.Unlock()
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// Spans returns everything received so far, in arrival order.
func (r *Receiver) Spans() []Span {
	spans, _ := r.snapshot()
	return spans
}

func (r *Receiver) snapshot() ([]Span, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...), r.arrived
}

// WaitFor returns the spans received so far once cond holds for them,
// checking again on each arrival. When ctx ends first, it returns what it
// has and an error that lists the span names.
func (r *Receiver) WaitFor(ctx context.Context, cond func([]Span) bool) ([]Span, error) {
	for {
		spans, arrived := r.snapshot()
		if cond(spans) {
			return spans, nil
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			names := make([]string, len(spans))
			for i, s := range spans {
				names[i] = s.GetName()
			}
			return spans, fmt.Errorf("otlptest: waiting for spans (have %d: %s): %w",
				len(spans), strings.Join(names, ", "), ctx.Err())
		}
	}
}

// Attr returns a span attribute's value: string, int64, float64, bool,
// []byte, or []any for arrays.
func Attr(s Span, key string) (any, bool) {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return value(kv.GetValue()), true
		}
	}
	return nil, false
}

func value(v *commonpb.AnyValue) any {
	switch v := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return v.StringValue
	case *commonpb.AnyValue_IntValue:
		return v.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return v.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return v.BoolValue
	case *commonpb.AnyValue_BytesValue:
		return v.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		vals := v.ArrayValue.GetValues()
		out := make([]any, len(vals))
		for i, e := range vals {
			out[i] = value(e)
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		out := make(map[string]any, len(v.KvlistValue.GetValues()))
		for _, kv := range v.KvlistValue.GetValues() {
			out[kv.GetKey()] = value(kv.GetValue())
		}
		return out
	default:
		return nil
	}
}

// ByName returns the spans with the given name.
func ByName(spans []Span, name string) []Span {
	var out []Span
	for _, s := range spans {
		if s.GetName() == name {
			out = append(out, s)
		}
	}
	return out
}

// ChildrenOf returns the spans whose parent is parent: same trace id and
// parent_span_id equal to parent's span id.
func ChildrenOf(spans []Span, parent Span) []Span {
	if len(parent.GetSpanId()) == 0 {
		// Roots have no parent_span_id; they are nobody's children.
		return nil
	}
	var out []Span
	for _, s := range spans {
		if bytes.Equal(s.GetTraceId(), parent.GetTraceId()) && bytes.Equal(s.GetParentSpanId(), parent.GetSpanId()) {
			out = append(out, s)
		}
	}
	return out
}
