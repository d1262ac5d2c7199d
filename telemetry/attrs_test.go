package telemetry_test

import (
	"slices"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"

	"github.com/tandemllm/tandem/telemetry"
)

func kvs(kv ...attribute.KeyValue) []attribute.KeyValue { return kv }

func TestAttrs(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want []attribute.KeyValue
	}{
		{"operation", kvs(telemetry.Operation(telemetry.OperationTextCompletion)), kvs(attribute.String("gen_ai.operation.name", "text_completion"))},
		{"provider", kvs(telemetry.ProviderName(telemetry.ProviderTandem)), kvs(attribute.String("gen_ai.provider.name", "tandem"))},
		{"request, all set", telemetry.RequestAttrs("llama-3-8b", 256, 0.7, 0.9, 40), kvs(
			attribute.String("gen_ai.request.model", "llama-3-8b"),
			attribute.Int("gen_ai.request.max_tokens", 256),
			attribute.Float64("gen_ai.request.temperature", 0.7),
			attribute.Float64("gen_ai.request.top_p", 0.9),
			attribute.Float64("gen_ai.request.top_k", 40),
		)},
		{"request, greedy without limits", telemetry.RequestAttrs("", 0, 0, 1, 0), kvs(
			attribute.Float64("gen_ai.request.temperature", 0),
			attribute.Float64("gen_ai.request.top_p", 1),
		)},
		{"seed", kvs(telemetry.Seed(42)), kvs(attribute.Int64("gen_ai.request.seed", 42))},
		{"response id", kvs(telemetry.ResponseID("cmpl-1")), kvs(attribute.String("gen_ai.response.id", "cmpl-1"))},
		{"finish reasons", kvs(telemetry.FinishReasons("stop", "length")), kvs(attribute.StringSlice("gen_ai.response.finish_reasons", []string{"stop", "length"}))},
		{"usage", telemetry.UsageAttrs(12, 34), kvs(attribute.Int("gen_ai.usage.input_tokens", 12), attribute.Int("gen_ai.usage.output_tokens", 34))},
		{"request id", kvs(telemetry.RequestID("r-1")), kvs(attribute.String("tandem.request.id", "r-1"))},
		{"group, role, rank", kvs(telemetry.Group("prefill-0"), telemetry.Role("prefill"), telemetry.Rank(3)), kvs(
			attribute.String("tandem.group", "prefill-0"),
			attribute.String("tandem.role", "prefill"),
			attribute.Int("tandem.rank", 3),
		)},
		{"step", telemetry.StepAttrs(9, 100, 7), kvs(
			attribute.Int64("tandem.step", 9),
			attribute.Int("tandem.step.prefill_tokens", 100),
			attribute.Int("tandem.step.decode_tokens", 7),
		)},
		{"kv", telemetry.KVAttrs(1<<20, 32), kvs(attribute.Int64("tandem.kv.bytes", 1<<20), attribute.Int("tandem.kv.layers", 32))},
		{"allreduce", telemetry.AllreduceAttrs(64, 1<<24), kvs(attribute.Int("tandem.allreduce.count", 64), attribute.Int64("tandem.allreduce.bytes", 1<<24))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !slices.EqualFunc(tc.got, tc.want, func(a, b attribute.KeyValue) bool { return a.Key == b.Key && a.Value == b.Value }) {
				t.Errorf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
}

// TestGenAIKeys pins the GenAI names to the last Go semconv package that
// carries them (later ones moved GenAI to its own repository).
func TestGenAIKeys(t *testing.T) {
	for _, tc := range []struct{ ours, conv attribute.Key }{
		{telemetry.GenAIOperationNameKey, semconv.GenAIOperationNameKey},
		{telemetry.GenAIProviderNameKey, semconv.GenAIProviderNameKey},
		{telemetry.GenAIRequestModelKey, semconv.GenAIRequestModelKey},
		{telemetry.GenAIRequestMaxTokensKey, semconv.GenAIRequestMaxTokensKey},
		{telemetry.GenAIRequestTemperatureKey, semconv.GenAIRequestTemperatureKey},
		{telemetry.GenAIRequestTopPKey, semconv.GenAIRequestTopPKey},
		{telemetry.GenAIRequestTopKKey, semconv.GenAIRequestTopKKey},
		{telemetry.GenAIRequestSeedKey, semconv.GenAIRequestSeedKey},
		{telemetry.GenAIResponseIDKey, semconv.GenAIResponseIDKey},
		{telemetry.GenAIResponseFinishReasonsKey, semconv.GenAIResponseFinishReasonsKey},
		{telemetry.GenAIUsageInputTokensKey, semconv.GenAIUsageInputTokensKey},
		{telemetry.GenAIUsageOutputTokensKey, semconv.GenAIUsageOutputTokensKey},
	} {
		if tc.ours != tc.conv {
			t.Errorf("%s, want %s", tc.ours, tc.conv)
		}
	}
	if telemetry.OperationTextCompletion != semconv.GenAIOperationNameTextCompletion.Value.AsString() ||
		telemetry.OperationChat != semconv.GenAIOperationNameChat.Value.AsString() {
		t.Error("operation names differ from the conventions'")
	}
}
