package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/tandemllm/tandem/bench"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// plainConfig is a small workload against an OpenAI-compatible server.
func plainConfig(url string) Config {
	c := Config{Workload: DefaultWorkload(), BaseURL: url, Tokenizer: "tiny", DisableProgress: true}
	c.NumPrompts, c.RandomInputLen, c.RandomOutputLen, c.Seed = 4, 16, 3, 1
	return c
}

func ptr[T any](v T) *T { return &v }

// TestFlagErrors: every bad flag fails before any request is sent, with
// a message naming the flag (and not blaming the network for what is not
// the network's fault).
func TestFlagErrors(t *testing.T) {
	srv := &plainServer{}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no prompts", func(c *Config) { c.NumPrompts = 0 }, "--num-prompts 0"},
		{"negative rate", func(c *Config) { c.RequestRate = "-2" }, "--request-rate"},
		{"NaN rate", func(c *Config) { c.RequestRate = "NaN" }, "--request-rate"},
		{"negative burstiness", func(c *Config) { c.Burstiness = -1 }, "--burstiness"},
		{"NaN burstiness", func(c *Config) { c.Burstiness = math.NaN() }, "--burstiness"},
		{"percentile 100", func(c *Config) { c.MetricPercentiles = "50,100" }, "--metric-percentiles"},
		{"percentile NaN", func(c *Config) { c.MetricPercentiles = "NaN" }, "--metric-percentiles"},
		{"goodput NaN", func(c *Config) { c.Goodput = []string{"ttft:NaN"} }, "--goodput"},
		{"goodput negative", func(c *Config) { c.Goodput = []string{"tpot:-1"} }, "--goodput"},
		{"goodput unknown key", func(c *Config) { c.Goodput = []string{"itl:5"} }, "--goodput"},
		{"jsonl output len", func(c *Config) { c.DatasetName, c.DatasetPath, c.JSONLOutputLen = "jsonl", "x.jsonl", -1 }, "--jsonl-output-len -1"},
		{"sharegpt output len", func(c *Config) { c.DatasetName, c.DatasetPath, c.ShareGPTOutputLen = "sharegpt", "x.json", -1 }, "--sharegpt-output-len -1"},
		{"metadata without =", func(c *Config) { c.Metadata = []string{"tp=2", "oops"} }, `--metadata "oops"`},
		{"metadata twice", func(c *Config) { c.Metadata = []string{"tp=2", "tp=4"} }, "--metadata"},
		{"metadata on a result key", func(c *Config) { c.Metadata = []string{"mean_ttft_ms=1"} }, "--metadata mean_ttft_ms=1"},
		{"header name", func(c *Config) { c.Headers = []string{"X Team=a"} }, "--header"},
		{"header value", func(c *Config) { c.Headers = []string{"X-Team=a\nb"} }, "--header"},
		{"unknown backend", func(c *Config) { c.Backend = "tgi" }, "--backend \"tgi\": must be one of openai, openai-chat, tandem, vllm"},
		{"backend against endpoint", func(c *Config) { c.Backend, c.Endpoint = "openai", "/v1/chat/completions" }, "--backend openai"},
		{"tandem backend on a URL", func(c *Config) { c.Backend = "tandem" }, "--backend tandem"},
		{"temperature", func(c *Config) { c.Temperature = ptr(-0.5) }, "--temperature"},
		{"top-p", func(c *Config) { c.TopP = ptr(0.0) }, "--top-p"},
		{"top-k", func(c *Config) { c.TopK = ptr(-2) }, "--top-k"},
		{"request id prefix", func(c *Config) { c.RequestIDPrefix = "a\tb" }, "--request-id-prefix"},
		{"unknown model", func(c *Config) { c.Model = "nosuch" }, `--model "nosuch"`},
		{"URL as --addr", func(c *Config) { c.Addr, c.BaseURL = c.BaseURL, "" }, "an http(s) URL goes in --base-url"},
		{"wrong base path", func(c *Config) { c.BaseURL += "/api" }, "give the server's root"},
		{"over the context", func(c *Config) {
			c.Tokenizer, c.NumPrompts, c.RandomInputLen, c.RandomOutputLen = "gpt2-124m", 1, 1000, 100
		},
			"--random-input-len and --random-output-len (with --random-range-ratio): request 0 has 1000 prompt and 100 output tokens, over the 1024-token context of gpt2-124m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := plainConfig(ts.URL)
			tt.edit(&cfg)
			_, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "unreachable") {
				t.Fatalf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
	if len(srv.prompts) > 0 {
		t.Fatalf("bad flags sent %d requests", len(srv.prompts))
	}
}

// TestAllFailed: a run whose every request fails reports and saves its
// result, then fails with ErrAllFailed and the codes.
func TestAllFailed(t *testing.T) {
	ts := httptest.NewServer(&plainServer{})
	defer ts.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "refused.jsonl")
	if err := writeFile(path, strings.Repeat(`{"prompt": "REFUSE me", "output_tokens": 2}`+"\n", 3)); err != nil {
		t.Fatal(err)
	}
	cfg := plainConfig(ts.URL)
	cfg.DatasetName, cfg.DatasetPath, cfg.NumPrompts = "jsonl", path, 3
	cfg.SaveResult, cfg.ResultDir, cfg.ResultFilename = true, dir, "r.json"
	var out bytes.Buffer
	_, err := Run(t.Context(), cfg, &out, &bytes.Buffer{})
	if !errors.Is(err, ErrAllFailed) || !strings.Contains(err.Error(), "HTTP 503: 3") || !strings.Contains(err.Error(), filepath.Join(dir, "r.json")) {
		t.Fatalf("error %v, want ErrAllFailed naming the codes and the saved file", err)
	}
	r := readJSON(t, filepath.Join(dir, "r.json"))
	if r["failed"] != 3.0 || r["completed"] != 0.0 || !strings.Contains(out.String(), "Failed requests:") {
		t.Fatalf("saved failed %v, completed %v; report:\n%s", r["failed"], r["completed"], out.String())
	}
	// Statistics of no sample are 0, as vLLM writes them, never null.
	for _, k := range []string{"mean_ttft_ms", "p99_itl_ms", "std_e2el_ms", "median_tpot_ms"} {
		if r[k] != 0.0 {
			t.Errorf("%s = %v, want 0", k, r[k])
		}
	}
}

// TestVLLMReaders: results saved with vllm bench serve's flags
// (--backend vllm, --metadata, --request-id-prefix, --append-result,
// sampling) load in Python as vLLM's own readers read them: every key
// vllm bench serve writes, with its type, the metadata as top-level
// keys, one result a line when appended.
func TestVLLMReaders(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skipf("python3: %v", err)
	}
	srv := &plainServer{echo: true}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	dir := t.TempDir()
	cfg := plainConfig(ts.URL + "/v1")
	cfg.Backend, cfg.Metadata, cfg.RequestIDPrefix = "vllm", []string{"tp=2", "note = a b=c"}, "job7-"
	cfg.Headers, cfg.Temperature, cfg.TopK = []string{"X-Team=infra"}, ptr(0.0), ptr(-1)
	cfg.AppendResult, cfg.ResultDir, cfg.ResultFilename, cfg.MaxConcurrency = true, dir, "all.jsonl", "1,2"
	cfg.RequestRate = "1000" // a Python float in the result, 1000.0
	rs, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].RequestIDs[0] != "job7-0-0" || rs[1].RequestIDs[3] != "job7-1-3" {
		t.Fatalf("%d results, ids %v %v", len(rs), rs[0].RequestIDs, rs[1].RequestIDs)
	}
	if h := srv.headers[0]; h.Get("X-Team") != "infra" || srv.bodies[0]["temperature"] != 0.0 || srv.bodies[0]["top_k"] != -1.0 {
		t.Fatalf("headers %v, body %v", h, srv.bodies[0])
	}
	// One more run, single point: a third line.
	cfg.MaxConcurrency = "1"
	if _, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(python, "testdata/vllm_reader.py", filepath.Join(dir, "all.jsonl"), "3", "vllm").CombinedOutput()
	if err != nil {
		t.Fatalf("a vLLM-style reader cannot load the result: %v\n%s", err, out)
	}
}

// TestAPIKeyFromEnv: with no --api-key the bench sends $OPENAI_API_KEY,
// else $TANDEM_API_KEY, to an OpenAI-compatible server.
func TestAPIKeyFromEnv(t *testing.T) {
	ts := httptest.NewServer(&plainServer{key: "sekret"})
	defer ts.Close()
	cfg := plainConfig(ts.URL)
	t.Setenv("OPENAI_API_KEY", "")
	t.Setenv("TANDEM_API_KEY", "")
	if _, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--api-key") {
		t.Fatalf("without a key: %v, want a refusal naming --api-key", err)
	}
	for _, env := range []string{"TANDEM_API_KEY", "OPENAI_API_KEY"} {
		t.Setenv(env, "sekret")
		rs, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{})
		if err != nil || rs[0].Completed != cfg.NumPrompts {
			t.Fatalf("with $%s: %v", env, err)
		}
	}
}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// FuzzPairs: --metadata/--header parsing never panics; what it accepts
// has a non-empty key without surrounding space, and the pairs' count
// is the arguments'.
func FuzzPairs(f *testing.F) {
	for _, s := range []string{"tp=2", "a = b=c", "=x", "noeq", " k =", "k=v\x00"} {
		f.Add(s, "x=y")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		pairs, err := ParsePairs("--metadata", []string{a, b})
		if err != nil {
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--metadata") {
				t.Fatalf("error %v does not name the flag", err)
			}
			return
		}
		if len(pairs) != 2 {
			t.Fatalf("%d pairs from 2 arguments", len(pairs))
		}
		for _, p := range pairs {
			if p[0] == "" || strings.TrimSpace(p[0]) != p[0] || pairs[0][0] == pairs[1][0] {
				t.Fatalf("pairs %q", pairs)
			}
		}
		for _, p := range pairs {
			_ = checkHeader(p[0], p[1], true)
			_ = checkHeader(p[0], p[1], false)
		}
	})
}

// FuzzGoodput: --goodput parsing never panics; what it accepts is a
// known key with a finite number of milliseconds >= 0.
func FuzzGoodput(f *testing.F) {
	for _, s := range []string{"ttft:500", "tpot:50 e2el:5000", "ttft:NaN", "itl:5", "ttft:-1", "ttft:1e400", ",:,", "ttft:inf"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		slo, err := parseGoodput([]string{s})
		if err != nil {
			if !strings.Contains(err.Error(), "--goodput") {
				t.Fatalf("error %v does not name the flag", err)
			}
			return
		}
		for k, v := range slo {
			if (k != bench.TTFT && k != bench.TPOT && k != bench.E2EL) || !(v >= 0) || math.IsInf(v, 0) {
				t.Fatalf("accepted %s:%v from %q", k, v, s)
			}
		}
	})
}

// TestResolveModelFlag: a model spec that is none of preset, directory
// or tokenizer.json is refused naming the flag that gave it.
func TestResolveModelFlag(t *testing.T) {
	for _, flag := range []string{"--tokenizer", "--preset", "--model"} {
		_, err := ResolveModelFlag(flag, "nosuch", "")
		if !errors.Is(err, ErrUsage) || !strings.HasPrefix(strings.TrimPrefix(err.Error(), "bad flag: "), flag+` "nosuch"`) {
			t.Errorf("%s nosuch: %v", flag, err)
		}
	}
	if m, err := ResolveModelFlag("--preset", "tiny", ""); err != nil || m.Config == nil || m.ID != "tiny" {
		t.Fatalf("--preset tiny: %v", err)
	}
}

// modelsServer is a Generation server over a real socket that records
// the metadata of each ListModels call.
type modelsServer struct {
	tandemv1.UnimplementedGenerationServer
	md chan metadata.MD
}

func (s *modelsServer) ListModels(ctx context.Context, _ *tandemv1.ListModelsRequest) (*tandemv1.ListModelsResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.md <- md
	return &tandemv1.ListModelsResponse{Models: []*tandemv1.Model{{Id: "tiny"}}}, nil
}

// TestGRPCKeyAndHeaders: an --addr target gets $TANDEM_API_KEY (before
// $OPENAI_API_KEY) as its bearer token and the --header pairs as
// metadata, on every call.
func TestGRPCKeyAndHeaders(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &modelsServer{md: make(chan metadata.MD, 1)}
	srv := grpc.NewServer()
	tandemv1.RegisterGenerationServer(srv, s)
	go srv.Serve(lis)
	defer srv.Stop()
	t.Setenv("TANDEM_API_KEY", "tk")
	t.Setenv("OPENAI_API_KEY", "ok")
	c := Config{Addr: lis.Addr().String(), Headers: []string{"X-Team=infra"}}
	_, served, closeTarget, err := c.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	closeTarget()
	md := <-s.md
	if served != "tiny" || strings.Join(md.Get("authorization"), "") != "Bearer tk" || strings.Join(md.Get("x-team"), "") != "infra" {
		t.Fatalf("served %q, metadata %v", served, md)
	}
}
