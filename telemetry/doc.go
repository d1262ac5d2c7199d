// Package telemetry is Tandem's OpenTelemetry tracing: one Provider per
// process, passed explicitly (the otel globals are never set), which gives
// tracers, the W3C propagator and the gRPC server and dial options that carry
// trace context between the coordinator and the workers.
//
// # Export on and off
//
// With Options.Endpoint set, spans are batched and exported over OTLP/gRPC
// and every span is sampled, whatever an upstream context says. With it
// empty, nothing is recorded, but the gRPC handlers still extract and inject
// W3C traceparent, and new roots still get trace ids; so a request that
// crosses a process with export off keeps one trace id, and the processes
// with export on put their spans in it.
//
// # Spans
//
// A request is one trace: its spans (queue, prefill, KV transfer, decode,
// and a migration span each time it moves to other groups)
// and the gRPC client and server spans that join the processes. A batched
// engine step serves many requests at once, so it is not a child of any:
// StepSpan makes it the root of its own trace with a link (LinkTo) to each
// request's span.
//
// # Attributes
//
// GenAI semantic conventions (OpenTelemetry semantic conventions, GenAI
// registry; status Development; names as of v1.37.0, when
// gen_ai.provider.name replaced gen_ai.system, which Tandem does not emit):
//
//	gen_ai.operation.name           string   "text_completion" or "chat" (Operation)
//	gen_ai.provider.name            string   "tandem" (ProviderName, ProviderTandem)
//	gen_ai.request.model            string   model name (RequestAttrs)
//	gen_ai.request.max_tokens       int      token limit (RequestAttrs)
//	gen_ai.request.temperature      double   (RequestAttrs)
//	gen_ai.request.top_p            double   (RequestAttrs)
//	gen_ai.request.top_k            double   a double in the conventions (RequestAttrs)
//	gen_ai.request.seed             int      (Seed)
//	gen_ai.response.id              string   (ResponseID)
//	gen_ai.response.finish_reasons  string[] one per choice (FinishReasons)
//	gen_ai.usage.input_tokens       int      prompt tokens (UsageAttrs)
//	gen_ai.usage.output_tokens      int      generated tokens (UsageAttrs)
//
// The conventions' server-side timings (gen_ai.server.time_to_first_token,
// gen_ai.server.time_per_output_token, gen_ai.server.request.duration) are
// metric instrument names, not span attributes; their names are exported as
// Metric* constants.
//
// Tandem's own attributes (no convention covers them):
//
//	tandem.request.id           string  coordinator's request id (RequestID)
//	tandem.group                string  worker group name (Group; also a resource attribute)
//	tandem.role                 string  "coordinator", "prefill" or "decode" (Role)
//	tandem.rank                 int     tensor-parallel rank in the group (Rank)
//	tandem.step                 int     step id on the rank (StepAttrs)
//	tandem.step.prefill_tokens  int     prompt tokens computed in the step (StepAttrs)
//	tandem.step.decode_tokens   int     tokens generated in the step (StepAttrs)
//	tandem.kv.bytes             int     KV-cache bytes transferred (KVAttrs)
//	tandem.kv.layers            int     layers in the KV transfer (KVAttrs)
//	tandem.allreduce.count      int     allreduces in the span (AllreduceAttrs)
//	tandem.allreduce.bytes      int     their total payload bytes (AllreduceAttrs)
//	tandem.migration.reason     string  why a request moved to other groups (MigrationAttrs)
//	tandem.migration.from_group string  the group that failed it (MigrationAttrs)
//	tandem.migration.tokens_before int  output tokens already sent (MigrationAttrs)
//	tandem.migration.attempt    int     the attempt the move starts, from 2 (MigrationAttrs)
//
// Package otlptest is an OTLP/gRPC receiver for tests of all this.
package telemetry
