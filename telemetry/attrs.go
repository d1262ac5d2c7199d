package telemetry

import "go.opentelemetry.io/otel/attribute"

// GenAI semantic-convention keys (OpenTelemetry semantic conventions, GenAI
// registry, v1.37.0 and later; see doc.go).
const (
	GenAIOperationNameKey         = attribute.Key("gen_ai.operation.name")
	GenAIProviderNameKey          = attribute.Key("gen_ai.provider.name")
	GenAIRequestModelKey          = attribute.Key("gen_ai.request.model")
	GenAIRequestMaxTokensKey      = attribute.Key("gen_ai.request.max_tokens")
	GenAIRequestTemperatureKey    = attribute.Key("gen_ai.request.temperature")
	GenAIRequestTopPKey           = attribute.Key("gen_ai.request.top_p")
	GenAIRequestTopKKey           = attribute.Key("gen_ai.request.top_k")
	GenAIRequestSeedKey           = attribute.Key("gen_ai.request.seed")
	GenAIResponseIDKey            = attribute.Key("gen_ai.response.id")
	GenAIResponseFinishReasonsKey = attribute.Key("gen_ai.response.finish_reasons")
	GenAIUsageInputTokensKey      = attribute.Key("gen_ai.usage.input_tokens")
	GenAIUsageOutputTokensKey     = attribute.Key("gen_ai.usage.output_tokens")
)

// Values of gen_ai.operation.name that Tandem serves.
const (
	OperationTextCompletion = "text_completion"
	OperationChat           = "chat"
)

// ProviderTandem is Tandem's gen_ai.provider.name: the conventions list only
// hosted services, and ask self-hosted ones for a custom value.
const ProviderTandem = "tandem"

// GenAI semantic-convention metric instrument names (histograms, seconds).
// They name metrics, not span attributes.
const (
	MetricServerTimeToFirstToken   = "gen_ai.server.time_to_first_token"
	MetricServerTimePerOutputToken = "gen_ai.server.time_per_output_token"
	MetricServerRequestDuration    = "gen_ai.server.request.duration"
)

// Tandem's own keys (see doc.go).
const (
	RequestIDKey         = attribute.Key("tandem.request.id")
	GroupKey             = attribute.Key("tandem.group")
	RoleKey              = attribute.Key("tandem.role")
	RankKey              = attribute.Key("tandem.rank")
	StepKey              = attribute.Key("tandem.step")
	StepPrefillTokensKey = attribute.Key("tandem.step.prefill_tokens")
	StepDecodeTokensKey  = attribute.Key("tandem.step.decode_tokens")
	KVBytesKey           = attribute.Key("tandem.kv.bytes")
	KVLayersKey          = attribute.Key("tandem.kv.layers")
	AllreduceCountKey    = attribute.Key("tandem.allreduce.count")
	AllreduceBytesKey    = attribute.Key("tandem.allreduce.bytes")
	MigrationReasonKey   = attribute.Key("tandem.migration.reason")
	MigrationFromKey     = attribute.Key("tandem.migration.from_group")
	MigrationTokensKey   = attribute.Key("tandem.migration.tokens_before")
	MigrationAttemptKey  = attribute.Key("tandem.migration.attempt")
)

// Operation is gen_ai.operation.name (OperationTextCompletion, OperationChat).
func Operation(name string) attribute.KeyValue { return GenAIOperationNameKey.String(name) }

// ProviderName is gen_ai.provider.name (ProviderTandem for Tandem itself).
func ProviderName(name string) attribute.KeyValue { return GenAIProviderNameKey.String(name) }

// RequestAttrs are a request's sampling parameters. The conventions make
// these "recommended if available", so values that mean "not set" are left
// out: an empty model, maxTokens <= 0 (no limit) and topK <= 0 (top-k off).
// Temperature 0 (greedy) and topP are always kept. top_k is a double in the
// conventions, so it is recorded as one.
func RequestAttrs(model string, maxTokens int, temperature, topP float64, topK int) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 5)
	if model != "" {
		attrs = append(attrs, GenAIRequestModelKey.String(model))
	}
	if maxTokens > 0 {
		attrs = append(attrs, GenAIRequestMaxTokensKey.Int(maxTokens))
	}
	attrs = append(attrs,
		GenAIRequestTemperatureKey.Float64(temperature),
		GenAIRequestTopPKey.Float64(topP),
	)
	if topK > 0 {
		attrs = append(attrs, GenAIRequestTopKKey.Float64(float64(topK)))
	}
	return attrs
}

// Seed is gen_ai.request.seed.
func Seed(seed int64) attribute.KeyValue { return GenAIRequestSeedKey.Int64(seed) }

// ResponseID is gen_ai.response.id (the id the OpenAI-style response carries).
func ResponseID(id string) attribute.KeyValue { return GenAIResponseIDKey.String(id) }

// FinishReasons is gen_ai.response.finish_reasons, one per choice ("stop",
// "length", ...).
func FinishReasons(reasons ...string) attribute.KeyValue {
	return GenAIResponseFinishReasonsKey.StringSlice(reasons)
}

// UsageAttrs are gen_ai.usage.input_tokens (prompt) and
// gen_ai.usage.output_tokens (generated).
func UsageAttrs(input, output int) []attribute.KeyValue {
	return []attribute.KeyValue{
		GenAIUsageInputTokensKey.Int(input),
		GenAIUsageOutputTokensKey.Int(output),
	}
}

// RequestID is tandem.request.id, the coordinator's id of a request.
func RequestID(id string) attribute.KeyValue { return RequestIDKey.String(id) }

// Group is tandem.group, a worker group's name.
func Group(name string) attribute.KeyValue { return GroupKey.String(name) }

// Role is tandem.role: "coordinator", "prefill" or "decode".
func Role(role string) attribute.KeyValue { return RoleKey.String(role) }

// Rank is tandem.rank, a worker's tensor-parallel rank in its group.
func Rank(rank int) attribute.KeyValue { return RankKey.Int(rank) }

// StepAttrs describe a batched step: its id on the rank and the prompt
// tokens and generated tokens it computed.
func StepAttrs(step uint64, prefillTokens, decodeTokens int) []attribute.KeyValue {
	return []attribute.KeyValue{
		// Step ids count up from zero and will not reach 2^63.
		StepKey.Int64(int64(step)),
		StepPrefillTokensKey.Int(prefillTokens),
		StepDecodeTokensKey.Int(decodeTokens),
	}
}

// KVAttrs describe a KV-cache transfer: bytes moved and layers covered.
func KVAttrs(bytes int64, layers int) []attribute.KeyValue {
	return []attribute.KeyValue{KVBytesKey.Int64(bytes), KVLayersKey.Int(layers)}
}

// AllreduceAttrs describe the allreduces of a span (typically a step): how
// many and their total payload bytes.
func AllreduceAttrs(count int, bytes int64) []attribute.KeyValue {
	return []attribute.KeyValue{AllreduceCountKey.Int(count), AllreduceBytesKey.Int64(bytes)}
}

// MigrationAttrs describe a request's move to other groups: why, the group
// that failed it, the output tokens already sent, and the attempt it
// starts (2 for the first migration).
func MigrationAttrs(reason, from string, tokensBefore, attempt int) []attribute.KeyValue {
	return []attribute.KeyValue{
		MigrationReasonKey.String(reason), MigrationFromKey.String(from),
		MigrationTokensKey.Int(tokensBefore), MigrationAttemptKey.Int(attempt),
	}
}
