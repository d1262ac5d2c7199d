package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemllm/tandem/bench"
)

// plainServer is a small OpenAI-compatible server that is not Tandem:
// it streams max_tokens chunks, one word each, gap apart, then a usage
// chunk, and records every prompt it receives in order; with echo it
// answers with the request's X-Request-Id, as vLLM does. With key it
// asks every request for that bearer token. A prompt holding REFUSE is
// answered 503; one holding FAILMID gets an error event after its
// second chunk, as a server whose engine fails mid-stream sends it.
type plainServer struct {
	gap     time.Duration
	echo    bool
	key     string
	mu      sync.Mutex
	prompts []string
	ids     []string
	headers []http.Header
	bodies  []map[string]any
}

func (s *plainServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.key != "" && r.Header.Get("Authorization") != "Bearer "+s.key {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"message":"bad key","type":"invalid_request_error"}}`)
		return
	}
	switch r.URL.Path {
	case "/v1/models":
		fmt.Fprint(w, `{"object":"list","data":[{"id":"plain-model","object":"model"}]}`)
		return
	case "/v1/completions", "/v1/chat/completions":
	default:
		http.NotFound(w, r)
		return
	}
	var req struct {
		Model     string                     `json:"model"`
		Prompt    string                     `json:"prompt"`
		Messages  []struct{ Content string } `json:"messages"`
		MaxTokens int                        `json:"max_tokens"`
		MaxComp   int                        `json:"max_completion_tokens"`
		Stream    bool                       `json:"stream"`
	}
	data, _ := io.ReadAll(r.Body)
	var body map[string]any
	_ = json.Unmarshal(data, &body)
	if err := json.Unmarshal(data, &req); err != nil || !req.Stream || req.Model != "plain-model" {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":{"message":"bad request: %v","type":"invalid_request_error"}}`, err)
		return
	}
	chat := r.URL.Path == "/v1/chat/completions"
	prompt, n := req.Prompt, req.MaxTokens
	if chat {
		prompt, n = req.Messages[0].Content, req.MaxComp
	}
	s.mu.Lock()
	s.prompts = append(s.prompts, prompt)
	s.ids = append(s.ids, r.Header.Get("X-Request-Id"))
	s.headers = append(s.headers, r.Header.Clone())
	s.bodies = append(s.bodies, body)
	s.mu.Unlock()
	if strings.Contains(prompt, "REFUSE") {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":{"message":"overloaded"}}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	if s.echo {
		w.Header().Set("X-Request-Id", r.Header.Get("X-Request-Id"))
	}
	fl := w.(http.Flusher)
	for i := range n {
		if i == 2 && strings.Contains(prompt, "FAILMID") {
			fmt.Fprint(w, "data: {\"error\":{\"message\":\"engine died\",\"type\":\"server_error\",\"code\":null}}\n\ndata: [DONE]\n\n")
			return
		}
		time.Sleep(s.gap) // the server's own pace, which the bench measures
		if chat {
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w%d \"}}]}\n\n", i)
		} else {
			fmt.Fprintf(w, "data: {\"id\":\"cmpl-x\",\"choices\":[{\"index\":0,\"text\":\"w%d \"}]}\n\n", i)
		}
		fl.Flush()
	}
	fmt.Fprintf(w, "data: {\"id\":\"cmpl-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d}}\n\n", 1000+len(prompt)%7, n)
	fmt.Fprint(w, "data: [DONE]\n\n")
}

func TestPlainOpenAIServer(t *testing.T) {
	for _, endpoint := range []string{"/v1/completions", "/v1/chat/completions"} {
		t.Run(endpoint, func(t *testing.T) {
			srv := &plainServer{gap: 3 * time.Millisecond}
			ts := httptest.NewServer(srv)
			defer ts.Close()
			cfg := Config{Workload: DefaultWorkload(), BaseURL: ts.URL, Endpoint: endpoint, Tokenizer: "tiny", DisableProgress: true}
			cfg.NumPrompts, cfg.RandomInputLen, cfg.RandomOutputLen, cfg.Seed, cfg.MaxConcurrency = 10, 16, 5, 9, "1"
			rs, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			r := rs[0]
			if r.Completed != 10 || len(srv.prompts) != 10 || r.Backend == "tandem" {
				t.Fatalf("%d completed, server saw %d, backend %s", r.Completed, len(srv.prompts), r.Backend)
			}
			checkPace(t, r, srv.gap)
			for i := range r.TTFTs {
				if r.InputLens[i] != 1000+len(srv.prompts[i])%7 {
					t.Errorf("request %d: input_len %d, not the server's usage count", i, r.InputLens[i])
				}
				// The server did not echo the X-Request-Id sent: the
				// request is known by the id its chunks carry.
				if !strings.HasPrefix(srv.ids[i], "bench-") || r.RequestIDs[i] != "cmpl-x" {
					t.Errorf("request %d: X-Request-Id %q sent, request_id %q kept; want bench-..., the server's cmpl-x", i, srv.ids[i], r.RequestIDs[i])
				}
			}
			// A server that echoes it filed the request under the bench's id.
			srv.echo, srv.ids = true, nil
			echoed, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(echoed[0].RequestIDs, srv.ids) {
				t.Errorf("request_ids %q, want the X-Request-Id headers sent, %q", echoed[0].RequestIDs, srv.ids)
			}
			// One seed: the same prompts, byte for byte, in the same order.
			first := srv.prompts[:cfg.NumPrompts]
			srv.prompts = nil
			if _, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(first, srv.prompts) {
				t.Fatal("two runs with one seed sent different prompts")
			}
			srv.prompts = nil
			cfg.Seed = 10
			if _, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
				t.Fatal(err)
			}
			if reflect.DeepEqual(first, srv.prompts) {
				t.Fatal("seeds 9 and 10 sent the same prompts")
			}
		})
	}
}

// checkPace checks what a server that sleeps gap before each of its
// chunks guarantees whatever the machine's load: the first chunk cannot
// come before gap, nor the last before n·gap, and the ITLs, the gaps
// between chunks as they arrive, add up to E2E − TTFT. No bound holds on
// one ITL: a reader descheduled for a while gets the chunks sent
// meanwhile together, an ITL of microseconds.
func checkPace(t *testing.T, r *bench.Result, gap time.Duration) {
	t.Helper()
	for i := range r.TTFTs {
		n := r.OutputLens[i]
		sum := 0.0
		for _, itl := range r.ITLs[i] {
			if itl < 0 {
				t.Errorf("request %d: ITL %v", i, itl)
			}
			sum += itl
		}
		if n != 5 || len(r.ITLs[i]) != n-1 || r.TTFTs[i] < gap.Seconds() || r.Latencies[i] < float64(n)*gap.Seconds() ||
			math.Abs(sum-(r.Latencies[i]-r.TTFTs[i])) > 1e-6 {
			t.Errorf("request %d: %d tokens, %d ITLs summing to %v, TTFT %v, E2E %v; want 5 tokens, 4 ITLs summing to E2E − TTFT, TTFT >= %v, E2E >= %v",
				i, n, len(r.ITLs[i]), sum, r.TTFTs[i], r.Latencies[i], gap, time.Duration(n)*gap)
		}
	}
}

// TestFailuresByCode: refused requests are failures counted by their
// error code, and their samples stay out of the statistics.
func TestFailuresByCode(t *testing.T) {
	srv := &plainServer{gap: time.Millisecond}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	dir := t.TempDir()
	path := dir + "/p.jsonl"
	var lines []string
	for i := range 6 {
		p := "a fine prompt"
		switch i % 3 {
		case 0:
			p = "REFUSE this one"
		case 1:
			p = "FAILMID this one"
		}
		lines = append(lines, fmt.Sprintf(`{"prompt": %q, "output_tokens": 3}`, p))
	}
	if err := writeFile(path, strings.Join(lines, "\n")); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Workload: DefaultWorkload(), BaseURL: ts.URL, Tokenizer: "tiny", DisableProgress: true}
	cfg.DatasetName, cfg.DatasetPath, cfg.NumPrompts = "jsonl", path, 6
	var out bytes.Buffer
	rs, err := Run(t.Context(), cfg, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	if r.Completed != 2 || r.Failed != 4 || r.ErrorsByCode["HTTP 503"] != 2 || r.ErrorsByCode["STREAM_ERROR server_error"] != 2 || len(r.Samples["ttft"]) != 2 {
		t.Fatalf("completed %d, failed %d, by code %v, %d TTFT samples", r.Completed, r.Failed, r.ErrorsByCode, len(r.Samples["ttft"]))
	}
	if r.Errors[0] == "" || !strings.Contains(r.Errors[1], "engine died") || r.Errors[2] != "" || !strings.Contains(out.String(), "HTTP 503:") {
		t.Fatalf("errors %q; report:\n%s", r.Errors, out.String())
	}
}
