package main

// Tests of the limits against hostile input: request sizes, prompt and
// output lengths, slow clients.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// peakRSS is a process's peak resident set (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			var kb int64
			fmt.Sscan(f[1], &kb)
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// zeros reads as many zero bytes as asked.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHostileInput sends `tandem up` (--max-model-len 1536, its
// coordinator in the up process) what a careless or hostile client might:
// a 100 MB body, a prompt past --max-model-len (as token ids, and as text
// too long to be worth tokenizing), max_tokens of 10^9, and n, stop and
// logprobs past their caps, over HTTP and over gRPC. Each gets a clear
// 400/413 (INVALID_ARGUMENT over gRPC) naming the parameter, the coordinator's peak memory grows by
// nothing near 100 MB, and a request running meanwhile finishes
// untouched.
func TestHostileInput(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tandem up")
	}
	u := startUpProcess(t, "--mode", "unified", "--tp", "1", "--max-model-len", "1536")
	const bgTokens = 300
	bg := make(chan error, 1)
	conn := u.dial(t, clientFlags{})
	go func() {
		g, err := grpcGenerate(t, conn, "", bgTokens)
		if err == nil && len(g.tokens) != bgTokens {
			err = fmt.Errorf("%d tokens, want %d", len(g.tokens), bgTokens)
		}
		bg <- err
	}()
	hc := &http.Client{Timeout: 2 * time.Minute}
	completions := u.http + "/v1/completions"
	before := peakRSS(t, u.pid())
	ids := make([]string, 1600)
	for i := range ids {
		ids[i] = fmt.Sprint(100 + i%1000)
	}
	stops := make([]string, 17)
	for i := range stops {
		stops[i] = fmt.Sprintf("%q", fmt.Sprint("stop", i))
	}
	for _, tc := range []struct {
		name   string
		body   io.Reader
		size   int64 // Content-Length, when the body is a stream
		status int
		param  string // the parameter the error names
		msg    string // in its message
	}{
		{"100 MB body", io.LimitReader(zeros{}, 100<<20), 100 << 20, 413, "", "exceeds"},
		{"prompt past --max-model-len", strings.NewReader(`{"prompt": [` + strings.Join(ids, ",") + `], "max_tokens": 4}`), 0, 400, "prompt", "1536 tokens"},
		{"text past --max-model-len, not tokenized", strings.NewReader(`{"prompt": "` + strings.Repeat("word ", 200_000) + `"}`), 0, 400, "prompt", "not tokenized"},
		{"max_tokens 10^9", strings.NewReader(`{"prompt": "Hello", "max_tokens": 1000000000}`), 0, 400, "prompt", "exceed"},
		{"n 5", strings.NewReader(`{"prompt": "Hello", "n": 5}`), 0, 400, "n", "only 1"},
		{"17 stop strings", strings.NewReader(`{"prompt": "Hello", "stop": [` + strings.Join(stops, ",") + `]}`), 0, 400, "stop", "at most 16"},
		{"logprobs 21", strings.NewReader(`{"prompt": "Hello", "logprobs": 21}`), 0, 400, "logprobs", "[0, 20]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, completions, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.size > 0 {
				req.ContentLength = tc.size
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			_, typ, param, msg := openAIError(t, b)
			if resp.StatusCode != tc.status || typ != "invalid_request_error" || param != tc.param || !strings.Contains(msg, tc.msg) {
				t.Fatalf("HTTP %d %s; want %d naming %q with %q", resp.StatusCode, b, tc.status, tc.param, tc.msg)
			}
		})
	}
	longIDs := make([]int32, 1600)
	for i := range longIDs {
		longIDs[i] = int32(100 + i%1000)
	}
	hello := &tandemv1.GenerateRequest_Text{Text: "Hello"}
	for _, tc := range []struct {
		name   string
		prompt *tandemv1.GenerateRequest_TokenIds // nil: "Hello"
		sp     *tandemv1.SamplingParams
		want   string // in the INVALID_ARGUMENT message
	}{
		{"max_tokens 10^9", nil, &tandemv1.SamplingParams{MaxTokens: 1_000_000_000}, "max_tokens"},
		{"prompt past --max-model-len", &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: longIDs}}, &tandemv1.SamplingParams{MaxTokens: 4}, "1536"},
		{"17 stop strings", nil, &tandemv1.SamplingParams{MaxTokens: 4, Stop: make([]string, 17)}, "stop"},
		{"top_logprobs 21", nil, &tandemv1.SamplingParams{MaxTokens: 4, Logprobs: true, TopLogprobs: 21}, "logprobs"},
	} {
		req := &tandemv1.GenerateRequest{Prompt: hello, Sampling: tc.sp}
		if tc.prompt != nil {
			req.Prompt = tc.prompt
		}
		stream, err := tandemv1.NewGenerationClient(conn).Generate(t.Context(), req)
		if err == nil {
			_, err = collectStream(stream)
		}
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("gRPC, %s: %v, want INVALID_ARGUMENT naming %q", tc.name, err, tc.want)
		}
	}
	if grew := peakRSS(t, u.pid()) - before; grew > 48<<20 {
		t.Fatalf("the coordinator's peak memory grew by %d MB", grew>>20)
	}
	if err := <-bg; err != nil {
		t.Fatalf("the request running meanwhile: %v", err)
	}
}

// TestSlowClientIsCut: a client that streams a long completion and stops
// reading, over HTTP (SSE) and over gRPC, is cut off once a write has
// waited --write-timeout: its request is aborted on the group, whose KV
// blocks are all free again while the client still holds its connection,
// and what the client gets never ends normally.
func TestSlowClientIsCut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tandem up")
	}
	su := startSecuredUp(t, "--mode", "unified", "--tp", "1", "--write-timeout", "1s")
	u, ca, groups := su.upProcess, su.ca, su.groups
	if len(groups) != 1 {
		t.Fatalf("groups %v, want one", groups)
	}
	wc, err := grpc.NewClient(groups[0].Ranks[0].Addr, grpc.WithTransportCredentials(credentials.NewTLS(identityOf(t, ca, "test"))))
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	worker := tandemv1.NewWorkerClient(wc)
	stats := func() *tandemv1.StatsResponse {
		st, err := worker.Stats(t.Context(), &tandemv1.StatsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// held waits until the group runs the request, then until it has let
	// it go with every KV block (the client still connected).
	held := func() {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for st := stats(); st.GetRunningRequests() == 0; st = stats() {
			if time.Now().After(deadline) {
				t.Fatal("the request never ran")
			}
			time.Sleep(5 * time.Millisecond) // polling the group's stats, which push nothing
		}
		for st := stats(); st.GetRunningRequests() != 0 || st.GetKvBlocksFree() != st.GetKvBlocksTotal(); st = stats() {
			if time.Now().After(deadline) {
				t.Fatalf("a minute on, the group still holds the request: %v", st)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	const maxTokens = 2000

	t.Run("http", func(t *testing.T) {
		// A receive buffer of a few KB that the client never reads.
		d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		host := strings.TrimPrefix(u.http, "http://")
		conn, err := d.DialContext(t.Context(), "tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		body := fmt.Sprintf(`{"prompt": "Hello", "max_tokens": %d, "ignore_eos": true, "logprobs": 20, "stream": true}`, maxTokens)
		fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", host, len(body), body)
		held()
		// The client reads at last: what was sent, then the end of the
		// connection, never the stream's last events.
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
		got, _ := io.ReadAll(conn)
		if strings.Contains(string(got), `"finish_reason":"length"`) || !strings.Contains(string(got), "200 OK") {
			t.Fatalf("the cut stream (%d bytes, %d events) ends normally or never began", len(got), strings.Count(string(got), "data: "))
		}
	})
	t.Run("grpc", func(t *testing.T) {
		// Windows of 64 KB, never opened further: the client reads nothing.
		conn, err := grpc.NewClient(u.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stream, err := tandemv1.NewGenerationClient(conn).Generate(t.Context(), &tandemv1.GenerateRequest{
			Prompt: &tandemv1.GenerateRequest_Text{Text: "Hello"}, Sampling: &tandemv1.SamplingParams{MaxTokens: maxTokens, IgnoreEos: true, Logprobs: true, TopLogprobs: 20}})
		if err != nil {
			t.Fatal(err)
		}
		held()
		g, err := collectStream(stream)
		if status.Code(err) != codes.DeadlineExceeded || g.finish == tandemv1.FinishReason_FINISH_REASON_LENGTH {
			t.Fatalf("the cut stream: %d tokens, finish %v, %v; want DEADLINE_EXCEEDED before its end", len(g.tokens), g.finish, err)
		}
	})
	if n := strings.Count(u.out.String(), "read nothing for the write timeout"); n != 2 {
		t.Fatalf("the coordinator logged %d cuts, want 2", n)
	}
}
