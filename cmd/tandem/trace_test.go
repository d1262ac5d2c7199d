package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/tracing"
)

// TestClusterTrace: a request through prefill TP-2 → decode TP-2 has a
// trace with one decode step per output token, every rank of both groups,
// per-token costs that add up to the inter-token latency, and (the workers
// collecting detailed traces) every step's time per op.
func TestClusterTrace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	tc := startClusterWith(t, "tiny", disaggregated(2, 2), clusterOptions{workerArgs: []string{"--collect-detailed-traces", "model"}})
	const maxTokens = 24
	prompt := testPrompts(t, tc.dir)[2]
	g, err := tc.generate(t.Context(), prompt, greedyParams(maxTokens))
	if err != nil {
		t.Fatal(err)
	}
	traces := tandemv1.NewTracesClient(tc.conn)
	resp, err := traces.GetTrace(t.Context(), &tandemv1.GetTraceRequest{RequestId: g.id})
	if err != nil {
		t.Fatal(err)
	}
	tr := resp.GetTrace()
	if len(tr.GetMissingRanks()) > 0 {
		t.Fatalf("missing ranks: %v", tr.GetMissingRanks())
	}
	lanes := map[string]*tandemv1.RankTrace{}
	for _, r := range tr.GetRanks() {
		lanes[laneName(r)] = r
	}
	for _, want := range []string{"prefill-0/0", "prefill-0/1", "decode-0/0", "decode-0/1"} {
		if lanes[want] == nil {
			t.Fatalf("no lane for %s; lanes %v", want, keys(lanes))
		}
	}
	if len(tr.GetTokens()) != maxTokens {
		t.Fatalf("%d tokens in the trace, want %d", len(tr.GetTokens()), maxTokens)
	}
	// One decode step per decode token on the decode leader, and the
	// followers recorded the same steps.
	decodeSteps := 0
	for _, s := range lanes["decode-0/0"].GetSteps() {
		for _, q := range s.GetSeqs() {
			if q.GetRequestId() == g.id && q.GetSampled() {
				decodeSteps++
			}
		}
	}
	if decodeSteps != maxTokens-1 {
		t.Fatalf("%d decode steps sampled the request, want %d (one per token after the prefill's)", decodeSteps, maxTokens-1)
	}
	if a, b := len(lanes["decode-0/0"].GetSteps()), len(lanes["decode-0/1"].GetSteps()); a != b {
		t.Fatalf("decode rank 0 recorded %d steps, rank 1 %d", a, b)
	}
	for name, r := range lanes {
		for _, s := range r.GetSteps() {
			ops := map[string]int64{}
			var sum int64
			for _, o := range s.GetOps() {
				ops[o.GetOp()] = o.GetNanos()
				sum += o.GetNanos()
			}
			if ops["attention"] <= 0 || ops["q_proj"] <= 0 || ops["all_reduce"] <= 0 || sum > s.GetComputeNanos() {
				t.Fatalf("%s step %d: ops %v (sum %d ns) against compute %d ns; want attention, q_proj and all_reduce within it",
					name, s.GetStep(), ops, sum, s.GetComputeNanos())
			}
		}
	}
	if len(lanes["prefill-0/0"].GetKvTransfers()) == 0 || len(lanes["decode-0/0"].GetKvTransfers()) == 0 {
		t.Fatal("no KV transfer recorded on the prefill or the decode leader")
	}

	if sum := tracing.Summarize(tr); sum.PeakRSSMB <= 0 || sum.PromptLen != len(prompt) || sum.Tokens != maxTokens {
		t.Fatalf("summary %+v", sum)
	}
	costs := tracing.Breakdown(tr)
	if len(costs) != maxTokens {
		t.Fatalf("%d token costs, want %d", len(costs), maxTokens)
	}
	var otherShare []float64
	for _, c := range costs[1:] {
		sum := c.Queue + c.Compute + c.Allreduce + c.KVTransfer + c.Sampling + c.Other
		if d := sum - c.ITL; d < -time.Microsecond || d > time.Microsecond {
			t.Fatalf("token %d: components add to %v, ITL %v", c.Index, sum, c.ITL)
		}
		if c.Allreduce <= 0 || c.AllreduceCount == 0 {
			t.Errorf("token %d: no allreduce attributed in a TP-2 step", c.Index)
		}
		// Other is what no record explains: mostly the jitter of the
		// delivery from the decode leader to the coordinator, which makes
		// it negative as often as positive; its size is what counts.
		otherShare = append(otherShare, math.Abs(float64(c.Other))/float64(c.ITL))
	}
	sort.Float64s(otherShare)
	if testing.Verbose() {
		var buf bytes.Buffer
		tracing.WriteTable(&buf, tr)
		t.Logf("trace of %s:\n%s", g.id, buf.String())
	}
	if p50 := otherShare[len(otherShare)/2]; p50 > 0.10 {
		var buf bytes.Buffer
		tracing.WriteTable(&buf, tr)
		t.Fatalf("unattributed time is %.1f%% of the ITL at P50 (limit 10%%)\n%s", 100*p50, buf.String())
	}

	var perfetto bytes.Buffer
	if err := tracing.WritePerfetto(&perfetto, tr); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		TraceEvents []struct {
			Name string         `json:"name"`
			Ph   string         `json:"ph"`
			Pid  int            `json:"pid"`
			Tid  int            `json:"tid"`
			Args map[string]any `json:"args"`
		} `json:"traceEvents"`
	}
	if err := json.Unmarshal(perfetto.Bytes(), &doc); err != nil {
		t.Fatalf("perfetto export does not parse: %v", err)
	}
	type track struct{ pid, tid int }
	var rankTracks []track
	for _, e := range doc.TraceEvents {
		if e.Ph == "M" && e.Name == "thread_name" {
			rankTracks = append(rankTracks, track{e.Pid, e.Tid})
		}
	}
	slices.SortFunc(rankTracks, func(a, b track) int { return a.pid*1000 + a.tid - b.pid*1000 - b.tid })
	if len(slices.Compact(rankTracks)) < len(tr.GetRanks()) {
		t.Fatalf("perfetto export has %d thread tracks for %d ranks", len(rankTracks), len(tr.GetRanks()))
	}

	_, err = traces.GetTrace(t.Context(), &tandemv1.GetTraceRequest{RequestId: "no-such-request"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown request id: %v, want NOT_FOUND", err)
	}

	// The same trace on the coordinator's web page, and the request in
	// its metrics.
	base := "http://" + tc.coord.httpAddr
	for path, want := range map[string]int{
		"/ui/": http.StatusOK, "/ui/requests/" + g.id: http.StatusOK, "/ui/requests/no-such-request": http.StatusNotFound,
		"/ui/requests/" + g.id + "/perfetto.json": http.StatusOK,
	} {
		body, code := httpGet(t, base+path)
		if code != want {
			t.Errorf("GET %s: %d, want %d", path, code, want)
		}
		if code == http.StatusOK && strings.HasPrefix(path, "/ui/requests/") && !strings.Contains(path, "perfetto") {
			if n := strings.Count(body, `class="lane"`); n != len(tr.GetRanks()) {
				t.Errorf("GET %s: %d lanes, want one per rank (%d)", path, n, len(tr.GetRanks()))
			}
		}
	}
	body, _ := httpGet(t, base+"/metrics")
	for _, want := range []string{`tandem:time_to_first_token_seconds_count{model_name="tiny"} 1`, `tandem:generation_tokens_total{model_name="tiny"} 24`} {
		if !strings.Contains(body, want) {
			t.Errorf("coordinator /metrics lacks %q", want)
		}
	}
}

func httpGet(t *testing.T, url string) (string, int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp.StatusCode
}

func laneName(r *tandemv1.RankTrace) string {
	return fmt.Sprintf("%s/%d", r.GetGroup(), r.GetRank())
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
