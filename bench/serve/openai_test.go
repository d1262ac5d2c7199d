package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// plainServer is a small OpenAI-compatible server that is not Tandem:
// it streams max_tokens chunks, one word each, gap apart, then a usage
// chunk, and records every prompt it receives in order.
type plainServer struct {
	gap     time.Duration
	mu      sync.Mutex
	prompts []string
	ids     []string
}

func (s *plainServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || !req.Stream || req.Model != "plain-model" {
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
	s.mu.Unlock()
	if strings.Contains(prompt, "REFUSE") {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":{"message":"overloaded"}}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	for i := range n {
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
			for i := range r.TTFTs {
				if r.TTFTs[i] < srv.gap.Seconds() || len(r.ITLs[i]) != 4 || r.OutputLens[i] != 5 || r.TTFTs[i] > r.Latencies[i] {
					t.Errorf("request %d: TTFT %v, %d ITLs, %d tokens, E2E %v", i, r.TTFTs[i], len(r.ITLs[i]), r.OutputLens[i], r.Latencies[i])
				}
				for _, itl := range r.ITLs[i] {
					if itl < srv.gap.Seconds()/2 {
						t.Errorf("request %d: ITL %v, below the server's pace %v", i, itl, srv.gap)
					}
				}
				if r.InputLens[i] != 1000+len(srv.prompts[i])%7 {
					t.Errorf("request %d: input_len %d, not the server's usage count", i, r.InputLens[i])
				}
			}
			if !strings.HasPrefix(srv.ids[0], "bench-") {
				t.Errorf("X-Request-Id %q", srv.ids[0])
			}
			// One seed: the same prompts, byte for byte, in the same order.
			first := srv.prompts
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
		if i%3 == 0 {
			p = "REFUSE this one"
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
	if r.Completed != 4 || r.Failed != 2 || r.ErrorsByCode["HTTP 503"] != 2 || len(r.Samples["ttft"]) != 4 {
		t.Fatalf("completed %d, failed %d, by code %v, %d TTFT samples", r.Completed, r.Failed, r.ErrorsByCode, len(r.Samples["ttft"]))
	}
	if r.Errors[0] == "" || r.Errors[1] != "" || !strings.Contains(out.String(), "HTTP 503:") {
		t.Fatalf("errors %q; report:\n%s", r.Errors, out.String())
	}
}
