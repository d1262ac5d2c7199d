package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/model/tokenizer"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/worker/supervisor"
)

// The end-to-end tests run what `tandem up` runs: a real embedded etcd, the
// coordinator on real sockets, and every rank as a worker process (this
// test binary re-executed, see TestMain).

// syncBuffer collects the workers' logs, shown when a test fails.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	grew chan struct{} // closed by the next Write, for waitFor
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.grew != nil {
		close(b.grew)
		b.grew = nil
	}
	return b.buf.Write(p)
}

// waitFor waits until the output holds s, for at most d.
func (b *syncBuffer) waitFor(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		b.mu.Lock()
		if strings.Contains(b.buf.String(), s) {
			b.mu.Unlock()
			return
		}
		if b.grew == nil {
			b.grew = make(chan struct{})
		}
		grew := b.grew
		b.mu.Unlock()
		select {
		case <-grew:
		case <-deadline:
			t.Fatalf("no %q in the output after %v:\n%s", s, d, b.String())
		}
	}
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testCluster struct {
	dir       string
	name      string
	etcd      *cluster.Embedded
	etcdDir   string
	endpoints string // every etcd member's client URL, comma-separated
	cli       *clientv3.Client
	coord     *runningCoordinator // nil when the coordinator runs as a process
	coordProc *process            // the coordinator's process, when it is one
	sup       *supervisor.Supervisor
	specs     []groupSpec
	conn      *grpc.ClientConn // to the coordinator's gRPC server
	client    tandemv1.GenerationClient
	logs      *syncBuffer
}

// clusterOptions vary a test cluster.
type clusterOptions struct {
	// otlp is the OTLP collector every process exports spans to.
	otlp string
	// restart has groups restarted as `tandem up` does (with restart's
	// backoff); without it the first death of a rank leaves its group down.
	restart *restartFlags
	// etcdMembers is the embedded etcd's member count (default 1).
	etcdMembers int
	// coordinatorProcess runs the coordinator as a process of its own
	// (`tandem coordinator`), which a test can kill, instead of in the
	// test's process.
	coordinatorProcess bool
	// maxInFlight and queueTimeout are the coordinator's --max-in-flight
	// (default 256) and --queue-timeout (default none).
	maxInFlight  int
	queueTimeout time.Duration
	// workerArgs are added to every worker's flags (a repeated flag's
	// last value wins).
	workerArgs []string
	// coordinator, if set, changes the coordinator's flags.
	coordinator func(*coordinatorFlags)
}

// coordinatorFlags are the flags of the cluster's coordinator.
func (o clusterOptions) coordinatorFlags() *coordinatorFlags {
	cf := &coordinatorFlags{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", maxInFlight: cmp.Or(o.maxInFlight, 256),
		queueTimeout: o.queueTimeout, migrationLimit: 3, migrationTimeout: 30 * time.Second, otlpEndpoint: o.otlp,
		prefixWeight: 2, loadWeight: 1, maxRequests: 256}
	if o.coordinator != nil {
		o.coordinator(cf)
	}
	return cf
}

// startCluster starts etcd, a coordinator and the groups' workers, and
// waits until every group is ready.
func startCluster(t testing.TB, presetName string, specs []groupSpec) *testCluster {
	t.Helper()
	return startClusterWith(t, presetName, specs, clusterOptions{})
}

func startClusterWith(t testing.TB, presetName string, specs []groupSpec, opts clusterOptions) *testCluster {
	t.Helper()
	ctx := t.Context()
	dir, err := preset.Ensure(ctx, presetName, preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	etcdDir := t.TempDir()
	etcd, err := cluster.StartEmbedded(ctx, etcdDir, cluster.EmbeddedOptions{Members: opts.etcdMembers})
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCluster{dir: dir, name: presetName, etcd: etcd, etcdDir: etcdDir, endpoints: strings.Join(etcd.Endpoints(), ","), specs: specs, logs: &syncBuffer{}}
	t.Cleanup(func() { tc.etcd.Close() }) // the etcd a test restarted too
	cli, err := dialEtcd(tc.endpoints, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	tc.cli = cli
	var grpcAddr string
	if opts.coordinatorProcess {
		tc.coordProc, grpcAddr = tc.startCoordinatorProcess(t, opts.coordinatorFlags())
	} else {
		rc, err := startCoordinator(context.WithoutCancel(ctx), opts.coordinatorFlags(), cli, dir, presetName, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rc.stop)
		tc.coord, grpcAddr = rc, rc.grpcAddr
	}
	common := []string{"--etcd-endpoints", tc.endpoints, "--model", dir, "--model-name", presetName, "--threads", "1",
		"--kv-cache-mb", "16", "--max-batch-tokens", "256", "--otlp-endpoint", opts.otlp}
	common = append(common, opts.workerArgs...)
	groups := make([]supervisor.Group, len(specs))
	for i, g := range specs {
		groups[i] = g.supervised(common)
	}
	restart := opts.restart
	if restart == nil {
		restart = &restartFlags{limit: -1}
	}
	sopts := restart.options(cli, tc.logs)
	sopts.Logger = slog.New(slog.NewTextHandler(tc.logs, nil))
	sup, err := supervisor.Start(ctx, sopts, groups...)
	if err != nil {
		t.Fatal(err)
	}
	tc.sup = sup
	t.Cleanup(func() {
		sup.Stop()
		if t.Failed() {
			t.Logf("worker logs:\n%s", tc.logs.String())
		}
	})
	if err := waitGroupsReady(ctx, cli, specs, 2*time.Minute, sup, io.Discard); err != nil {
		t.Fatal(err)
	}
	// The coordinator routes once it has seen every group ready and
	// polled its load: wait for Health to say so.
	tc.connect(t, grpcAddr)
	tc.waitServing(t, len(specs))
	return tc
}

// connect points the cluster's client at the coordinator at addr.
func (tc *testCluster) connect(t testing.TB, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tc.conn = conn
	tc.client = tandemv1.NewGenerationClient(conn)
}

// waitServing waits until the coordinator reports n ready groups.
func (tc *testCluster) waitServing(t testing.TB, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		h, err := tc.client.Health(ctx, &tandemv1.HealthRequest{})
		if err == nil && h.GetStatus() == tandemv1.ServingStatus_SERVING_STATUS_SERVING && readyGroups(h) == n {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("coordinator not serving %d groups: %v %v", n, h, err)
		}
	}
}

func readyGroups(h *tandemv1.HealthResponse) int {
	n := 0
	for _, g := range h.GetGroups() {
		n += int(g.GetReady())
	}
	return n
}

// generated is what one Generate stream returned.
type generated struct {
	id     string
	tokens []int32
	text   string
	finish tandemv1.FinishReason
	usage  *tandemv1.Usage
}

func collectStream(stream grpc.ServerStreamingClient[tandemv1.GenerateResponse]) (generated, error) {
	var g generated
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return g, nil
		}
		if err != nil {
			return g, err
		}
		if msg.GetRequestId() != "" {
			g.id = msg.GetRequestId()
		}
		g.tokens = append(g.tokens, msg.GetTokenIds()...)
		g.text += msg.GetText()
		if msg.GetFinishReason() != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED {
			g.finish, g.usage = msg.GetFinishReason(), msg.GetUsage()
		}
	}
}

func (tc *testCluster) generate(ctx context.Context, prompt []int32, sp *tandemv1.SamplingParams) (generated, error) {
	stream, err := tc.client.Generate(ctx, &tandemv1.GenerateRequest{
		Prompt: &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: prompt}}, Sampling: sp,
	})
	if err != nil {
		return generated{}, err
	}
	return collectStream(stream)
}

// localEngine is an in-process engine of the model in dir on the CPU,
// closed when the test ends.
func localEngine(t *testing.T, dir string, opts engine.Options) *engine.Engine {
	t.Helper()
	be, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	m, err := engine.Open(dir, be, engine.Shard{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	e, err := engine.New(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// localGreedy runs the prompts through one in-process engine: the
// reference the cluster must match token for token.
func localGreedy(t *testing.T, dir string, prompts [][]int32, maxTokens int) [][]int32 {
	t.Helper()
	e := localEngine(t, dir, engine.Options{KVCacheBytes: 16 << 20})
	out := make([][]int32, len(prompts))
	for i, p := range prompts {
		if err := e.Add(engine.Request{ID: fmt.Sprint(i), Prompt: p, Params: engine.SamplingParams{MaxTokens: maxTokens, IgnoreEOS: true}}); err != nil {
			t.Fatal(err)
		}
	}
	for e.HasWork() {
		outs, err := e.Step(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outs {
			var i int
			fmt.Sscan(o.RequestID, &i)
			out[i] = append(out[i], o.Token)
		}
	}
	return out
}

// testPrompts are token prompts of varied lengths (one crosses several
// KV blocks and prefill chunks).
func testPrompts(t *testing.T, dir string) [][]int32 {
	t.Helper()
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{
		"Hello",
		"The quick brown fox jumps over the lazy dog.",
		"Disaggregated serving moves the KV cache from prefill ranks to decode ranks, resharded when their tensor-parallel degrees differ.",
	}
	var ps [][]int32
	for _, s := range texts {
		ps = append(ps, tok.Encode(s, true))
	}
	long := make([]int32, 300)
	for i := range long {
		long[i] = int32((i*7919 + 11) % 50000)
	}
	return append(ps, long)
}

func greedyParams(n int) *tandemv1.SamplingParams {
	return &tandemv1.SamplingParams{MaxTokens: int32(n), IgnoreEos: true}
}

func disaggregated(p, d int) []groupSpec {
	return []groupSpec{{name: "prefill-0", role: cluster.RolePrefill, tp: p}, {name: "decode-0", role: cluster.RoleDecode, tp: d}}
}

// TestClusterMatchesLocalEngine: greedy output through prefill TP-p →
// decode TP-d (KV resharded on the way) equals one in-process engine's.
func TestClusterMatchesLocalEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	const maxTokens = 12
	type pair struct {
		preset string
		p, d   int
	}
	var pairs []pair
	for _, name := range []string{"tiny", "gqa-tiny"} {
		for _, pd := range [][2]int{{2, 2}, {2, 4}, {1, 8}, {4, 1}} {
			pairs = append(pairs, pair{name, pd[0], pd[1]})
		}
	}
	for _, c := range pairs {
		t.Run(fmt.Sprintf("%s/%d-to-%d", c.preset, c.p, c.d), func(t *testing.T) {
			tc := startCluster(t, c.preset, disaggregated(c.p, c.d))
			prompts := testPrompts(t, tc.dir)
			want := localGreedy(t, tc.dir, prompts, maxTokens)
			var wg sync.WaitGroup
			got := make([]generated, len(prompts))
			errs := make([]error, len(prompts))
			for i, p := range prompts {
				wg.Go(func() { got[i], errs[i] = tc.generate(t.Context(), p, greedyParams(maxTokens)) })
			}
			wg.Wait()
			for i := range prompts {
				if errs[i] != nil {
					t.Fatalf("prompt %d: %v", i, errs[i])
				}
				if !slices.Equal(got[i].tokens, want[i]) {
					t.Errorf("prompt %d (%d tokens): cluster %v, local %v", i, len(prompts[i]), got[i].tokens, want[i])
				}
			}
		})
	}
}

// TestClusterConcurrentRequests: 64 requests of mixed lengths at once all
// complete with the token counts they asked for.
func TestClusterConcurrentRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	tc := startCluster(t, "tiny", disaggregated(2, 2))
	const n = 64
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			prompt := make([]int32, 1+i*7%97)
			for j := range prompt {
				prompt[j] = int32((i*131 + j*17) % 50000)
			}
			want := 1 + i%13
			g, err := tc.generate(t.Context(), prompt, greedyParams(want))
			switch {
			case err != nil:
				errs[i] = err
			case len(g.tokens) != want || g.usage.GetCompletionTokens() != int32(want) || g.usage.GetPromptTokens() != int32(len(prompt)):
				errs[i] = fmt.Errorf("%d tokens, usage %v; want %d tokens of a %d-token prompt", len(g.tokens), g.usage, want, len(prompt))
			case g.finish != tandemv1.FinishReason_FINISH_REASON_LENGTH:
				errs[i] = fmt.Errorf("finish %v", g.finish)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// workerStats asks a group's leader for its load.
func (tc *testCluster) workerStats(t testing.TB, group string) *tandemv1.StatsResponse {
	t.Helper()
	st, err := tc.leader(t, group).Stats(t.Context(), &tandemv1.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// leader connects to a ready group's rank 0, until the test ends.
func (tc *testCluster) leader(t testing.TB, group string) tandemv1.WorkerClient {
	t.Helper()
	m, err := cluster.WatchMembership(t.Context(), tc.cli)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	g, err := m.WaitReady(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(g.Ranks[0].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return tandemv1.NewWorkerClient(conn)
}

// waitAllBlocksFree waits until every block of group's KV pool is free.
func (tc *testCluster) waitAllBlocksFree(t *testing.T, group string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st := tc.workerStats(t, group)
		if st.GetKvBlocksFree() == st.GetKvBlocksTotal() && st.GetRunningRequests() == 0 && st.GetWaitingRequests() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d KV blocks free, %d running, %d waiting", group, st.GetKvBlocksFree(), st.GetKvBlocksTotal(), st.GetRunningRequests(), st.GetWaitingRequests())
		}
		<-tick.C
	}
}

// TestClusterCancelFreesBlocks: a request cancelled mid-decode releases
// its KV blocks on both groups.
func TestClusterCancelFreesBlocks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	tc := startCluster(t, "tiny", disaggregated(1, 2))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := tc.client.Generate(ctx, &tandemv1.GenerateRequest{
		Prompt:   &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: make([]int32, 100)}},
		Sampling: greedyParams(400),
	})
	if err != nil {
		t.Fatal(err)
	}
	for got := 0; got < 3; {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got += len(msg.GetTokenIds())
	}
	if st := tc.workerStats(t, "decode-0"); st.GetKvBlocksFree() == st.GetKvBlocksTotal() {
		t.Fatal("decode group holds no KV blocks while decoding")
	}
	cancel()
	for {
		_, err := stream.Recv()
		if err == nil {
			continue // tokens already on their way
		}
		if status.Code(err) != codes.Canceled {
			t.Fatalf("after cancel: %v, want CANCELLED", err)
		}
		break
	}
	tc.waitAllBlocksFree(t, "decode-0")
	tc.waitAllBlocksFree(t, "prefill-0")
}

// kill ends one rank's process at once (SIGKILL), as a crash would, and
// returns its pid.
func (tc *testCluster) kill(t testing.TB, group string, rank int) int {
	t.Helper()
	st, ok := tc.sup.Status(group)
	if i := slices.Index(st.Ranks, rank); ok && i >= 0 && i < len(st.PIDs) {
		if err := syscall.Kill(st.PIDs[i], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		return st.PIDs[i]
	}
	t.Fatalf("%s rank %d is not running: %+v", group, rank, st)
	return 0
}

// TestOpenAIClientStreamsSameTokens drives /v1/chat/completions with the
// official OpenAI Go SDK, streaming with logprobs, and gets the tokens
// (text, count and log-probabilities) gRPC gives for the same prompt.
func TestOpenAIClientStreamsSameTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	tc := startCluster(t, "tiny", disaggregated(1, 1))
	const content, maxTokens = "Say something about tensor parallelism.", 10
	client := openai.NewClient(option.WithBaseURL("http://"+tc.coord.httpAddr+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	stream := client.Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
		Model:         tc.name,
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage(content)},
		MaxTokens:     openai.Int(maxTokens),
		Temperature:   openai.Float(0),
		Logprobs:      openai.Bool(true),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var (
		text     string
		logprobs []float64
		usage    int64
	)
	for stream.Next() {
		chunk := stream.Current()
		for _, c := range chunk.Choices {
			text += c.Delta.Content
			for _, lp := range c.Logprobs.Content {
				logprobs = append(logprobs, lp.Logprob)
			}
		}
		if chunk.Usage.CompletionTokens > 0 {
			usage = chunk.Usage.CompletionTokens
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	// The plain chat template (the tiny preset has no Llama-3 header
	// tokens), as the coordinator's package documentation gives it.
	g, err := tc.client.Generate(t.Context(), &tandemv1.GenerateRequest{
		Prompt:   &tandemv1.GenerateRequest_Text{Text: "user: " + content + "\nassistant:"},
		Sampling: &tandemv1.SamplingParams{MaxTokens: maxTokens, Logprobs: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		want   generated
		wantLP []float64
	)
	for {
		msg, err := g.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want.tokens = append(want.tokens, msg.GetTokenIds()...)
		want.text += msg.GetText()
		for _, lp := range msg.GetLogprobs() {
			wantLP = append(wantLP, float64(lp.GetChosen().GetLogprob()))
		}
	}
	if text != want.text || len(logprobs) != len(want.tokens) || usage != int64(len(want.tokens)) {
		t.Fatalf("OpenAI client: %q, %d logprobs, usage %d; gRPC: %q, %d tokens", text, len(logprobs), usage, want.text, len(want.tokens))
	}
	for i := range logprobs {
		if d := logprobs[i] - wantLP[i]; d > 1e-4 || d < -1e-4 {
			t.Fatalf("token %d: logprob %g over HTTP, %g over gRPC", i, logprobs[i], wantLP[i])
		}
	}
}

// TestClusterRejectsBadRequests: bad fields get INVALID_ARGUMENT over gRPC
// and HTTP 400 over the OpenAI API, with a message naming the field.
func TestClusterRejectsBadRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	tc := startCluster(t, "tiny", disaggregated(1, 1))
	long := make([]int32, 100000)
	cases := []struct {
		name  string
		req   *tandemv1.GenerateRequest
		http  string
		field string
	}{
		{"over-long prompt", &tandemv1.GenerateRequest{Prompt: &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: long}}, Sampling: greedyParams(4)},
			`{"model":"tiny","prompt":"` + strings.Repeat("tandem ", 5000) + `","max_tokens":4}`, "prompt"},
		{"negative temperature", &tandemv1.GenerateRequest{Prompt: &tandemv1.GenerateRequest_Text{Text: "hi"}, Sampling: &tandemv1.SamplingParams{MaxTokens: 4, Temperature: -1}},
			`{"model":"tiny","prompt":"hi","max_tokens":4,"temperature":-1}`, "temperature"},
		{"top_p above 1", &tandemv1.GenerateRequest{Prompt: &tandemv1.GenerateRequest_Text{Text: "hi"}, Sampling: &tandemv1.SamplingParams{MaxTokens: 4, TopP: 1.5}},
			`{"model":"tiny","prompt":"hi","max_tokens":4,"top_p":1.5}`, "top_p"},
		{"max_tokens 0", &tandemv1.GenerateRequest{Prompt: &tandemv1.GenerateRequest_Text{Text: "hi"}, Sampling: &tandemv1.SamplingParams{MaxTokens: 0}},
			`{"model":"tiny","prompt":"hi","max_tokens":0}`, "max_tokens"},
		{"unknown model", &tandemv1.GenerateRequest{Model: "gpt-17", Prompt: &tandemv1.GenerateRequest_Text{Text: "hi"}, Sampling: greedyParams(4)},
			`{"model":"gpt-17","prompt":"hi","max_tokens":4}`, "model"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := tc.generate0(t, c.req)
			if s, _ := status.FromError(err); s.Code() != codes.InvalidArgument || !strings.Contains(s.Message(), c.field) {
				t.Errorf("gRPC: %v, want INVALID_ARGUMENT naming %s", err, c.field)
			}
			resp, err := http.Post("http://"+tc.coord.httpAddr+"/v1/completions", "application/json", strings.NewReader(c.http))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error struct {
					Message, Type string
					Param         *string
				}
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			named := strings.Contains(body.Error.Message, c.field) || body.Error.Param != nil && strings.Contains(*body.Error.Param, c.field)
			if resp.StatusCode != http.StatusBadRequest || !named || body.Error.Type != "invalid_request_error" {
				t.Errorf("HTTP: %d %+v, want 400 naming %s", resp.StatusCode, body.Error, c.field)
			}
		})
	}
}

// generate0 runs a raw request and returns the first error, if any.
func (tc *testCluster) generate0(t *testing.T, req *tandemv1.GenerateRequest) (generated, error) {
	stream, err := tc.client.Generate(t.Context(), req)
	if err != nil {
		return generated{}, err
	}
	return collectStream(stream)
}
