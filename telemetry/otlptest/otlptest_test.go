package otlptest_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemllm/tandem/telemetry/otlptest"
)

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func request(spans ...*tracepb.Span) *coltracepb.ExportTraceServiceRequest {
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			str("service.name", "svc"),
			{Key: "tandem.rank", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 2}}},
		}},
		ScopeSpans: []*tracepb.ScopeSpans{{Scope: &commonpb.InstrumentationScope{Name: "scope"}, Spans: spans}},
	}}}
}

var (
	traceID = []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	root    = &tracepb.Span{TraceId: traceID, SpanId: []byte{1, 0, 0, 0, 0, 0, 0, 0}, Name: "root", Attributes: []*commonpb.KeyValue{
		str("s", "x"),
		{Key: "i", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 7}}},
		{Key: "d", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 0.5}}},
		{Key: "b", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}},
		{Key: "a", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{
			Values: []*commonpb.AnyValue{{Value: &commonpb.AnyValue_StringValue{StringValue: "stop"}}},
		}}}},
	}}
	child   = &tracepb.Span{TraceId: traceID, SpanId: []byte{2, 0, 0, 0, 0, 0, 0, 0}, ParentSpanId: root.SpanId, Name: "child"}
	orphan  = &tracepb.Span{TraceId: []byte{9}, SpanId: []byte{3, 0, 0, 0, 0, 0, 0, 0}, ParentSpanId: root.SpanId, Name: "child"}
	another = &tracepb.Span{TraceId: traceID, SpanId: []byte{4, 0, 0, 0, 0, 0, 0, 0}, Name: "another"}
)

func TestReceiver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := otlptest.Start(t)
	cc, err := grpc.NewClient(r.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := coltracepb.NewTraceServiceClient(cc)

	// A waiter started before the spans arrive must be woken by them.
	type result struct {
		spans []otlptest.Span
		err   error
	}
	waited := make(chan result, 1)
	go func() {
		s, err := r.WaitFor(ctx, func(s []otlptest.Span) bool { return len(s) == 4 })
		waited <- result{s, err}
	}()
	for _, req := range []*coltracepb.ExportTraceServiceRequest{request(root, child), request(orphan, another)} {
		if _, err := client.Export(ctx, req); err != nil {
			t.Fatalf("Export: %v", err)
		}
	}
	res := <-waited
	if res.err != nil {
		t.Fatal(res.err)
	}
	spans := res.spans
	if s := spans[0]; s.Service != "svc" || s.Scope != "scope" || s.Resource["tandem.rank"] != "2" {
		t.Errorf("span 0: service %q scope %q resource %v", s.Service, s.Scope, s.Resource)
	}

	for _, tc := range []struct {
		key  string
		want any
	}{
		{"s", "x"}, {"i", int64(7)}, {"d", 0.5}, {"b", true}, {"a", []any{"stop"}}, {"missing", nil},
	} {
		got, ok := otlptest.Attr(spans[0], tc.key)
		if ok != (tc.want != nil) || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Attr(%q) = %v, %v; want %v", tc.key, got, ok, tc.want)
		}
	}

	names := func(s []otlptest.Span) []string {
		var out []string
		for _, x := range s {
			out = append(out, fmt.Sprintf("%s/%d", x.GetName(), x.GetSpanId()[0]))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		got  []otlptest.Span
		want []string
	}{
		{"ByName child", otlptest.ByName(spans, "child"), []string{"child/2", "child/3"}},
		{"ChildrenOf root", otlptest.ChildrenOf(spans, spans[0]), []string{"child/2"}},
		{"ChildrenOf child", otlptest.ChildrenOf(spans, spans[1]), nil},
		{"ChildrenOf a span without id", otlptest.ChildrenOf(spans, otlptest.Span{Span: &tracepb.Span{TraceId: traceID}}), nil},
	} {
		if got := names(tc.got); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if n := len(r.Spans()); n != 4 {
		t.Errorf("Spans() has %d, want 4", n)
	}
}

func TestWaitForDeadline(t *testing.T) {
	r := otlptest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := r.WaitFor(ctx, func(s []otlptest.Span) bool { return len(s) > 0 })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor on an idle receiver: %v, want DeadlineExceeded", err)
	}
}
