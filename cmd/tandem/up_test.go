package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemllm/tandem/internal/proctest"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// TestUp runs `tandem up` as a user does (here with unified TP-2 groups
// and a three-member etcd, and with disaggregated groups; free ports), sends a request to the endpoint it prints, then stops
// it as Ctrl-C would: it returns only after every worker process exited,
// and neither a worker nor the coordinator logged an error on the way.
func TestUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	for _, mode := range [][]string{{"--mode", "unified", "--tp", "2", "--etcd-members", "3"}, {"--prefill-tp", "1", "--decode-tp", "2"}} {
		t.Run(strings.Join(mode, " "), func(t *testing.T) {
			u := startUp(t, append([]string{"--preset", "tiny", "--threads", "1"}, mode...)...)
			u.generateHello(t)
			if err := u.stop(); err != nil {
				t.Fatalf("tandem up: %v", err)
			}
			if kids := childProcesses(t); len(kids) > 0 {
				t.Fatalf("processes left behind: %v", kids)
			}
			for line := range strings.Lines(u.logs.String()) {
				if strings.Contains(line, "ERROR") || strings.Contains(line, "ready=false") {
					t.Fatalf("a clean stop logged %q; the whole log:\n%s", line, u.logs.String())
				}
			}
		})
	}
}

// TestUpInterruptedWhileStarting: Ctrl-C at each stage of tandem up's
// start (etcd starting; workers joining their groups) stops it without an
// error, prints no "context canceled" (its own or a worker's: the
// interrupt is what the user asked for) and leaves no process.
func TestUpInterruptedWhileStarting(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	for _, at := range []string{"starting etcd", "groups ready: 0/"} {
		t.Run(at, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			errR, done := upInBackground(ctx)
			var logs strings.Builder
			read := make(chan struct{})
			go func() {
				defer close(read)
				sc := bufio.NewScanner(errR)
				for sc.Scan() {
					logs.WriteString(sc.Text() + "\n")
					if strings.HasPrefix(sc.Text(), at) {
						cancel()
					}
				}
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("tandem up interrupted at %q: %v", at, err)
				}
			case <-time.After(time.Minute):
				t.Fatalf("tandem up did not stop within a minute of the interrupt")
			}
			<-read
			if strings.Contains(logs.String(), "context canceled") {
				t.Fatalf("an interrupted start printed its context error:\n%s", logs.String())
			}
			if kids := childProcesses(t); len(kids) > 0 {
				t.Fatalf("processes left behind: %v", kids)
			}
		})
	}
}

// upInBackground runs `tandem up` of tiny (one thread a rank, free
// ports, and extra flags) in this process until ctx ends; its stderr comes
// through the returned reader, ExecuteContext's error through done.
func upInBackground(ctx context.Context, extra ...string) (stderr io.Reader, done <-chan error) {
	errR, errW := io.Pipe()
	cmd := newRootCmd()
	cmd.SetOut(io.Discard)
	cmd.SetErr(errW)
	cmd.SetArgs(append([]string{"up", "--preset", "tiny", "--threads", "1", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, extra...))
	ch := make(chan error, 1)
	go func() {
		ch <- cmd.ExecuteContext(ctx)
		errW.Close()
	}()
	return errR, ch
}

// Every bad flag of `tandem up` is refused with an error naming it,
// before anything starts (no model prepared, no etcd, no process).
func TestUpFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-members", "0"}, "--etcd-members 0: must be odd and >= 1"},
		{[]string{"--etcd-members", "2"}, "--etcd-members 2: must be odd"},
		{[]string{"--etcd-members", "-3"}, "--etcd-members -3"},
		{[]string{"--kv-cache-mb", "0"}, "--kv-cache-mb 0: must be >= 1"},
		{[]string{"--kv-cache-mb", "-512"}, "--kv-cache-mb -512"},
		{[]string{"--max-batch-tokens", "0"}, "--max-batch-tokens 0"},
		{[]string{"--restart-backoff", "-1s"}, "--restart-backoff -1s: must be >= 0"},
		{[]string{"--restart-max-backoff", "-1s"}, "--restart-max-backoff -1s"},
		{[]string{"--restart-backoff", "2s", "--restart-max-backoff", "1s"}, "--restart-max-backoff 1s: must be >= --restart-backoff 2s"},
		{[]string{"--crash-loop-window", "-5s"}, "--crash-loop-window -5s"},
		{[]string{"--crash-loop-limit", "0"}, "--crash-loop-limit 0: must be >= 1"},
		{[]string{"--crash-loop-limit", "-1"}, "--crash-loop-limit -1"},
		{[]string{"--ready-timeout", "0s"}, "--ready-timeout 0s: must be > 0"},
		{[]string{"--max-in-flight", "0"}, "--max-in-flight 0"},
		{[]string{"--prefill-tp", "0"}, "--prefill-tp 0"},
		{[]string{"--collect-detailed-traces", "layers"}, `--collect-detailed-traces "layers": want a comma-separated list of model, worker and all`},
		{[]string{"--collect-detailed-traces", "model,"}, `--collect-detailed-traces "model,"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, err := runTandemStreams(t, append([]string{"up", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if stderr != "" {
				t.Fatalf("something started before the refusal:\n%s", stderr)
			}
			if kids := childProcesses(t); len(kids) > 0 {
				t.Fatalf("processes left behind: %v", kids)
			}
		})
	}
}

// upRun is `tandem up` running in this process; its workers are this test
// binary (see TestMain).
type upRun struct {
	grpcAddr string
	stdout   []string // the lines up to the gRPC endpoint's
	logs     *syncBuffer
	cancel   context.CancelFunc
	done     chan error
	once     sync.Once
	err      error
}

// startUp runs `tandem up ARGS` on free ports and waits until it prints
// its gRPC endpoint; the test's end stops it, as Ctrl-C would.
func startUp(t *testing.T, args ...string) *upRun {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	out, w := io.Pipe()
	u := &upRun{logs: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	// The coordinator runs in this process and logs to slog's default:
	// into the same log as the workers', for the tests to read.
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(u.logs, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	cmd := newRootCmd()
	cmd.SetOut(w)
	cmd.SetErr(u.logs)
	cmd.SetArgs(append([]string{"up", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, args...))
	go func() {
		u.done <- cmd.ExecuteContext(ctx)
		w.Close()
	}()
	lines := make(chan []string, 1)
	go func() {
		var seen []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			seen = append(seen, sc.Text())
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "gRPC" {
				lines <- seen
			}
		}
	}()
	t.Cleanup(func() {
		if err := u.stop(); err != nil || t.Failed() {
			t.Logf("tandem up: %v; its log:\n%s", err, u.logs.String())
		}
	})
	select {
	case u.stdout = <-lines:
		u.grpcAddr = strings.Fields(u.stdout[len(u.stdout)-1])[1]
	case err := <-u.done:
		u.done <- err
		t.Fatalf("tandem up ended before serving: %v\n%s", err, u.logs.String())
	case <-time.After(3 * time.Minute):
		t.Fatalf("tandem up printed no gRPC endpoint\n%s", u.logs.String())
	}
	return u
}

// stop interrupts tandem up and returns what it returned; it fails if
// up takes more than 30 s to stop.
func (u *upRun) stop() error {
	u.once.Do(func() {
		u.cancel()
		select {
		case u.err = <-u.done:
		case <-time.After(30 * time.Second):
			u.err = errors.New("tandem up did not stop within 30 s of the interrupt")
		}
	})
	return u.err
}

// client dials the cluster's coordinator.
func (u *upRun) client(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(u.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// generateHello sends one short request and expects its 5 tokens.
func (u *upRun) generateHello(t *testing.T) {
	t.Helper()
	stream, err := tandemv1.NewGenerationClient(u.client(t)).Generate(t.Context(), &tandemv1.GenerateRequest{
		Prompt: &tandemv1.GenerateRequest_Text{Text: "Hello"}, Sampling: greedyParams(5),
	})
	if err != nil {
		t.Fatal(err)
	}
	g, err := collectStream(stream)
	if err != nil || len(g.tokens) != 5 {
		t.Fatalf("request through tandem up: %d tokens, %v", len(g.tokens), err)
	}
}

// childProcesses lists this process's living children.
func childProcesses(t *testing.T) []int { return proctest.Children(t, os.Getpid()) }
