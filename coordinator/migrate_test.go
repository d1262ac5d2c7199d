package coordinator

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/metrics"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/telemetry"
)

// TestMigrate: a request whose decode group failed moves to another one
// with its output so far appended to the prompt, within the limits.
func TestMigrate(t *testing.T) {
	m := tinyModel(t)
	tests := []struct {
		name      string
		groups    []cluster.Group
		tokens    int  // output before the failure
		maxTokens int  // the request's
		moved     int  // migrations before this one
		closing   bool // the coordinator is closing
		want      string
		code      codes.Code // when it cannot move
		finish    tandemv1.FinishReason
	}{
		{name: "to the other decode group", tokens: 3, maxTokens: 10, want: "p>d2"},
		{name: "decode group recomputes without a prefill group", groups: []cluster.Group{group("d1", cluster.RoleDecode, 1, "m"), group("d2", cluster.RoleDecode, 1, "m")},
			tokens: 3, maxTokens: 10, want: "d2"},
		{name: "limit reached", tokens: 3, maxTokens: 10, moved: 2, code: codes.Unavailable, want: "the --migration-limit"},
		{name: "no healthy group within the timeout", groups: []cluster.Group{group("p", cluster.RolePrefill, 1, "m"), group("d1", cluster.RoleDecode, 1, "m")},
			tokens: 3, maxTokens: 10, code: codes.Unavailable, want: "within the migration timeout"},
		{name: "closing", tokens: 3, maxTokens: 10, closing: true, code: codes.Unavailable, want: "closing"},
		{name: "every token out", tokens: 3, maxTokens: 3, finish: tandemv1.FinishReason_FINISH_REASON_LENGTH},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			groups := tt.groups
			if groups == nil {
				groups = []cluster.Group{group("p", cluster.RolePrefill, 1, "m"), group("d1", cluster.RoleDecode, 1, "m"), group("d2", cluster.RoleDecode, 1, "m")}
			}
			c := routeTestCoordinator(t, groups...)
			t.Cleanup(c.wg.Wait) // the failed group's abort, in the background
			c.opts.MigrationLimit, c.opts.MigrationTimeout = 2, 100*time.Millisecond
			spans := tracetest.NewSpanRecorder()
			c.tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)).Tracer("test")
			c.closing = tt.closing
			r, sent := testRequest(t, m, &tandemv1.SamplingParams{MaxTokens: int32(tt.maxTokens)})
			r.c = c
			r.trace.id = "req"
			r.migrations = tt.moved
			failed := c.groups["d1"]
			r.newAttempt(1, route{whole: failed})
			out := []int32{10, 11, 12}[:tt.tokens]
			r.batch(failed, out, nil, nil)

			rt, err := r.migrate(&groupFailure{g: failed, reason: metrics.MigrationUnavailable, err: status.Error(codes.Unavailable, "group is down")}, 2)
			switch {
			case tt.finish != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED:
				if err != nil || len(*sent) != 1 || (*sent)[0].FinishReason != tt.finish {
					t.Fatalf("err %v, sent %v; want a %v finish", err, *sent, tt.finish)
				}
				return
			case tt.code != codes.OK:
				if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `group "d1" is unavailable: group is down`) {
					t.Fatalf("err %v, want %v with %q", err, tt.code, tt.want)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			pre, dec := rt.names()
			if got := strings.TrimPrefix(pre+">"+dec, ">"); got != tt.want {
				t.Errorf("route %s, want %s", got, tt.want)
			}
			if !failed.failing {
				t.Error("the failed group is still routed to")
			}
			a := r.newAttempt(2, rt)
			if a.id != "req#migration1" || !slices.Equal(a.prompt, append(slices.Clone(r.p.prompt), out...)) || a.sampling.MaxTokens != int32(tt.maxTokens-tt.tokens) {
				t.Errorf("attempt 2: id %q prompt %v max_tokens %d", a.id, a.prompt, a.sampling.MaxTokens)
			}
			if !slices.Equal(r.p.prompt, []int32{1, 2, 3}) {
				t.Errorf("the request's own prompt changed: %v", r.p.prompt)
			}
			var span sdktrace.ReadOnlySpan
			for _, sp := range spans.Ended() {
				if sp.Name() == "migration" {
					span = sp
				}
			}
			want := map[attribute.Key]attribute.Value{
				telemetry.MigrationReasonKey: attribute.StringValue(metrics.MigrationUnavailable), telemetry.MigrationFromKey: attribute.StringValue("d1"),
				telemetry.MigrationTokensKey: attribute.IntValue(tt.tokens), telemetry.MigrationAttemptKey: attribute.IntValue(2),
			}
			if span == nil {
				t.Fatal("no migration span")
			}
			for _, kv := range span.Attributes() {
				if v, ok := want[kv.Key]; ok && v == kv.Value {
					delete(want, kv.Key)
				}
			}
			if len(want) > 0 {
				t.Errorf("migration span %v lacks %v", span.Attributes(), want)
			}
			ms := r.trace.snapshot().GetMigrations()
			if len(ms) != 1 || ms[0].FromGroup != "d1" || ms[0].DecodeGroup != dec || ms[0].TokensBefore != int32(tt.tokens) ||
				ms[0].Reason != metrics.MigrationUnavailable || ms[0].WorkerRequestId != "req#migration1" {
				t.Errorf("trace migrations %v", ms)
			}
		})
	}
}
