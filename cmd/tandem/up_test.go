package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// TestUp runs `tandem up` as a user does (here with unified TP-2 groups
// and a three-member etcd, and with disaggregated groups; free ports), sends a request to the endpoint it prints, then stops
// it as Ctrl-C would: it returns only after every worker process exited.
func TestUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	for _, mode := range [][]string{{"--mode", "unified", "--tp", "2", "--etcd-members", "3"}, {"--prefill-tp", "1", "--decode-tp", "2"}} {
		t.Run(strings.Join(mode, " "), func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			out, w := io.Pipe()
			cmd := newRootCmd()
			cmd.SetOut(w)
			cmd.SetErr(io.Discard)
			cmd.SetArgs(append([]string{"up", "--preset", "tiny", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--threads", "1"}, mode...))
			done := make(chan error, 1)
			go func() {
				done <- cmd.ExecuteContext(ctx)
				w.Close()
			}()
			addr := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "gRPC" {
						addr <- f[1]
					}
				}
			}()
			var grpcAddr string
			select {
			case grpcAddr = <-addr:
			case err := <-done:
				t.Fatalf("tandem up ended before serving: %v", err)
			case <-time.After(2 * time.Minute):
				t.Fatal("tandem up printed no gRPC endpoint")
			}
			conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			stream, err := tandemv1.NewGenerationClient(conn).Generate(ctx, &tandemv1.GenerateRequest{
				Prompt: &tandemv1.GenerateRequest_Text{Text: "Hello"}, Sampling: greedyParams(5),
			})
			if err != nil {
				t.Fatal(err)
			}
			g, err := collectStream(stream)
			if err != nil || len(g.tokens) != 5 {
				t.Fatalf("request through tandem up: %d tokens, %v", len(g.tokens), err)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("tandem up: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("tandem up did not stop within 30 s of the interrupt")
			}
			if kids := childProcesses(t); len(kids) > 0 {
				t.Fatalf("processes left behind: %v", kids)
			}
		})
	}
}

// childProcesses lists this process's living children.
func childProcesses(t *testing.T) []int { return childrenOf(t, os.Getpid()) }
