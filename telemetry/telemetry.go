package telemetry

import (
	"context"
	"fmt"
	"net"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
)

// DefaultBatchTimeout is how long a finished span waits, at most, before it is
// exported when Options.BatchTimeout is zero.
const DefaultBatchTimeout = time.Second

// Options configures Setup.
type Options struct {
	// Endpoint is the OTLP/gRPC collector address (host:port); "" disables
	// export: spans are not recorded, but W3C trace context is still
	// propagated through gRPC so a downstream process with export on keeps
	// the trace.
	Endpoint string
	// ServiceName is resource attribute service.name (e.g.
	// "tandem-coordinator", "tandem-worker").
	ServiceName string
	// Attributes are extra resource attributes (e.g. tandem.group,
	// tandem.rank, host.name).
	Attributes []attribute.KeyValue
	// BatchTimeout bounds how long spans wait before export (default 1s;
	// tests use small values).
	BatchTimeout time.Duration
}

// Provider owns one process's tracer provider and the gRPC instrumentation
// built on it. A nil *Provider is valid: it records nothing, propagates
// nothing through gRPC and shuts down at once, so code under test can take
// one without setting anything up.
type Provider struct {
	sdk     *sdktrace.TracerProvider
	prop    propagation.TextMapPropagator
	enabled bool
}

// Setup builds a Provider. With an endpoint it exports spans in batches over
// insecure OTLP/gRPC (the connection is made lazily, so a collector that is
// down does not fail Setup; spans are dropped, never blocking the caller,
// when the batch queue is full). It never touches the otel globals.
func Setup(ctx context.Context, opts Options) (*Provider, error) {
	p := &Provider{
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
	if opts.Endpoint == "" {
		// An SDK provider that never samples, rather than the noop
		// provider: roots still get real trace ids, so when this process
		// starts a request the downstream processes that export share its
		// trace id.
		p.sdk = sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
		return p, nil
	}
	if _, _, err := net.SplitHostPort(opts.Endpoint); err != nil {
		return nil, fmt.Errorf("telemetry: endpoint %q: want host:port: %w", opts.Endpoint, err)
	}
	res, err := newResource(opts)
	if err != nil {
		return nil, err
	}
	exp, err := otlptracegrpc.New(ctx,
		otlptracegrpc.WithEndpoint(opts.Endpoint),
		otlptracegrpc.WithInsecure(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter for %s: %w", opts.Endpoint, err)
	}
	batch := opts.BatchTimeout
	if batch <= 0 {
		batch = DefaultBatchTimeout
	}
	p.sdk = sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(batch)),
		// Sample everything, whatever the parent's flag says: an upstream
		// process with export off sends unsampled contexts, and its
		// operator's choice must not silence this one's.
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
	)
	p.enabled = true
	return p, nil
}

func newResource(opts Options) (*resource.Resource, error) {
	attrs := make([]attribute.KeyValue, 0, len(opts.Attributes)+1)
	if opts.ServiceName != "" {
		attrs = append(attrs, semconv.ServiceName(opts.ServiceName))
	}
	attrs = append(attrs, opts.Attributes...)
	// Default carries the SDK's own attributes and OTEL_RESOURCE_ATTRIBUTES;
	// ours come second so they win.
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL, attrs...))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return res, nil
}

// Enabled reports whether spans are recorded and exported.
func (p *Provider) Enabled() bool {
	return p != nil && p.enabled
}

// TracerProvider is the underlying provider, for instrumentation that takes
// one (e.g. otelhttp).
func (p *Provider) TracerProvider() trace.TracerProvider {
	if p == nil {
		return noop.NewTracerProvider()
	}
	return p.sdk
}

// Tracer returns a named tracer (by convention the importing package's path).
func (p *Provider) Tracer(name string) trace.Tracer {
	return p.TracerProvider().Tracer(name)
}

// Propagator is W3C tracecontext plus baggage.
func (p *Provider) Propagator() propagation.TextMapPropagator {
	if p == nil {
		return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return p.prop
}

func (p *Provider) otelgrpcOptions() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(p.sdk),
		otelgrpc.WithPropagators(p.prop),
		// otelgrpc falls back to the global meter provider; RPC metrics
		// belong to the metrics package, so pin a noop one.
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
	}
}

// ServerOptions instruments a gRPC server: a server span per RPC, child of
// the caller's span when the metadata carries a W3C traceparent.
func (p *Provider) ServerOptions() []grpc.ServerOption {
	if p == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(p.otelgrpcOptions()...))}
}

// DialOptions instruments a gRPC client: a client span per RPC, injected as
// W3C traceparent into the outgoing metadata.
func (p *Provider) DialOptions() []grpc.DialOption {
	if p == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(p.otelgrpcOptions()...))}
}

// Shutdown flushes the spans not yet exported and closes the exporter; ctx
// bounds the flush. Later calls do nothing, and spans started afterwards are
// not recorded.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	if err := p.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}

// StepSpan starts a span named "step" for one batched engine step, as the
// root of its own trace linked to every request it served: a step belongs to
// many requests, so making it the child of one of them would misplace it in
// the others. start is when the step began (steps are often recorded after
// the fact); the caller ends the span.
func StepSpan(ctx context.Context, tr trace.Tracer, start time.Time, links []trace.Link, attrs ...attribute.KeyValue) trace.Span {
	_, span := tr.Start(ctx, "step",
		trace.WithNewRoot(),
		trace.WithTimestamp(start),
		trace.WithLinks(links...),
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attrs...),
	)
	return span
}

// LinkTo links to a request's span, e.g. from a StepSpan; attrs describe the
// request's part in the linking span (e.g. its tokens in the step).
func LinkTo(sc trace.SpanContext, attrs ...attribute.KeyValue) trace.Link {
	return trace.Link{SpanContext: sc, Attributes: attrs}
}
