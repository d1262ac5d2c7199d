package worker

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/model/preset"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// TestKVDTypesAcrossGroups: a prefill group and a decode group with any
// pair of KV cache dtypes serve a request (the decode side converts once,
// on receipt) and generate what one fp32 engine does, and a bf16 or fp16
// prefill group moves half the KV bytes per prompt token an fp32 one does,
// by both groups' transfer metrics.
func TestKVDTypesAcrossGroups(t *testing.T) {
	dir, err := preset.Ensure(t.Context(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	prompt := make([]int32, 60)
	for i := range prompt {
		prompt[i] = int32(1000 + 37*i)
	}
	const maxTokens = 6
	want := aloneGreedy(t, dir, prompt, maxTokens)
	perToken := map[string]float64{}
	for _, c := range []struct{ pre, dec engine.KVCacheDType }{
		{engine.KVFP32, engine.KVFP32}, {engine.KVBF16, engine.KVBF16}, {engine.KVBF16, engine.KVFP32}, {engine.KVFP32, engine.KVBF16},
		{engine.KVFP16, engine.KVBF16}, {engine.KVFP32, engine.KVFP16},
	} {
		t.Run(fmt.Sprintf("%s-to-%s", c.pre, c.dec), func(t *testing.T) {
			regs := map[string]*prometheus.Registry{"prefill": prometheus.NewRegistry(), "decode": prometheus.NewRegistry()}
			start := func(role cluster.Role, kv engine.KVCacheDType) string {
				return startWorkerWith(t, dir, Options{Role: role, Group: string(role) + "-0", ModelName: "tiny",
					Engine: engine.Options{KVCacheBytes: 16 << 20, KVCacheDType: kv}, KVTimeout: 30 * time.Second,
					Registerer: regs[string(role)]})
			}
			dec, pre := start(cluster.RoleDecode, c.dec), start(cluster.RolePrefill, c.pre)
			got := disaggregated(t, pre, dec, dec, "r", prompt, maxTokens)
			// tiny's greedy margins are wide: both dtypes keep every token.
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("tokens %v, want %v (fp32 alone)", got, want)
			}
			for _, side := range []struct{ role, dir string }{{"prefill", "send"}, {"decode", "recv"}} {
				// The decode group loads the KV before its first step, but
				// the prefill's push ends on the last ack, which may reach
				// it after the decode group has finished.
				tokens := waitCounter(t, regs[side.role], "tandem:kv_transfer_prompt_tokens_total", side.dir, float64(len(prompt)))
				bytes := counter(t, regs[side.role], "tandem:kv_transfer_bytes_total", side.dir)
				perToken[fmt.Sprint(c.pre, side.dir)] = bytes / tokens
			}
		})
	}
	for _, dir := range []string{"send", "recv"} {
		fp32 := perToken[fmt.Sprint(engine.KVFP32, dir)]
		for _, half := range []engine.KVCacheDType{engine.KVBF16, engine.KVFP16} {
			got := perToken[fmt.Sprint(half, dir)]
			t.Logf("%s: %.0f KV bytes per prompt token with an fp32 prefill cache, %.0f with %s", dir, fp32, got, half)
			if fp32 == 0 || got != fp32/2 {
				t.Errorf("%s: %v bytes per prompt token with %s, want half of fp32's %v", dir, got, half, fp32)
			}
		}
	}
}

// TestStaleSkipRecomputes: a decode group told to keep a prefix it does
// not hold (the coordinator's index was stale) gets only the rest of the
// KV, so it recomputes the prompt and still generates the right tokens;
// one that holds it keeps it and loads the rest.
func TestStaleSkipRecomputes(t *testing.T) {
	dir, err := preset.Ensure(t.Context(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	prompt := make([]int32, 60)
	for i := range prompt {
		prompt[i] = int32(2000 + 41*i)
	}
	const maxTokens = 6
	want := aloneGreedy(t, dir, prompt, maxTokens)
	reg := prometheus.NewRegistry()
	opts := func(role cluster.Role) Options {
		o := Options{Role: role, Group: string(role) + "-0", ModelName: "tiny", Engine: engine.Options{KVCacheBytes: 16 << 20}, KVTimeout: 30 * time.Second}
		if role == cluster.RoleDecode {
			o.Registerer = reg
		}
		return o
	}
	dec, pre := startWorkerWith(t, dir, opts(cluster.RoleDecode)), startWorkerWith(t, dir, opts(cluster.RolePrefill))
	for i, c := range []struct {
		name   string
		loaded float64 // prompt tokens whose KV the decode group loaded, cumulative
	}{{"stale: recomputed", 0}, {"held: the rest loaded", 60}} {
		got := disaggregatedSkip(t, pre, dec, dec, fmt.Sprint("r", i), prompt, maxTokens, 32)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: tokens %v, want %v", c.name, got, want)
		}
		if n := counter(t, reg, "tandem:kv_transfer_prompt_tokens_total", "recv"); n != c.loaded {
			t.Fatalf("%s: the decode group loaded the KV of %v prompt tokens, want %v", c.name, n, c.loaded)
		}
	}
}

// disaggregated runs a request through a prefill worker and a decode
// worker (one rank each, its KV sent to kvAddr: the decode worker's, or a
// proxy in front of it) and returns its tokens; opts are added to the
// connections' options (TLS credentials replace plain TCP).
func disaggregated(t *testing.T, pre, dec, kvAddr, id string, prompt []int32, maxTokens int, opts ...grpc.DialOption) []int32 {
	return disaggregatedSkip(t, pre, dec, kvAddr, id, prompt, maxTokens, 0, opts...)
}

// disaggregatedSkip is disaggregated with the decode group told it holds
// the prompt's first skip tokens.
func disaggregatedSkip(t *testing.T, pre, dec, kvAddr, id string, prompt []int32, maxTokens, skip int, opts ...grpc.DialOption) []int32 {
	t.Helper()
	dial := func(addr string) tandemv1.WorkerClient {
		cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return tandemv1.NewWorkerClient(cc)
	}
	sp := &tandemv1.SamplingParams{MaxTokens: int32(maxTokens), IgnoreEos: true}
	resp, err := dial(pre).Prefill(t.Context(), &tandemv1.PrefillRequest{
		RequestId: id, PromptTokenIds: prompt, Sampling: sp, Attempt: 1,
		Destination: &tandemv1.KVDestination{Group: "decode-0", Tp: 1, RankAddresses: []string{kvAddr}, SkipTokens: int32(skip)},
	})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := dial(dec).Decode(t.Context(), &tandemv1.DecodeRequest{
		RequestId: id, PromptTokenIds: prompt, FirstTokenId: resp.GetTokenId(), Sampling: sp, Kv: resp.GetKv(),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := []int32{resp.GetTokenId()}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, msg.GetTokenIds()...)
	}
}

// counter reads a worker counter with the given direction label.
func counter(t *testing.T, reg *prometheus.Registry, name, direction string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label(m, "direction") == direction {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{direction=%q}", name, direction)
	return 0
}

// waitCounter waits up to 10 s for a counter read by counter to reach
// want; it fails the test when the counter passes want or time runs out.
// A push's metrics are recorded after its last ack, which its caller
// does not wait for.
func waitCounter(t *testing.T, reg *prometheus.Registry, name, direction string, want float64) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		got := counter(t, reg, name, direction)
		switch {
		case got == want:
			return got
		case got > want || time.Now().After(deadline):
			t.Fatalf("%s{direction=%q} = %v, want %v", name, direction, got, want)
		}
		<-tick.C
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
