package worker

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/model/preset"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// TestQueueTimeout: a request still queued past its queue timeout (here
// behind a long request in a group that runs one sequence at a time) is
// dropped with RESOURCE_EXHAUSTED as soon as its deadline passes; the
// running request is untouched, and a bad timeout is refused.
func TestQueueTimeout(t *testing.T) {
	dir, err := preset.Ensure(t.Context(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []cluster.Role{cluster.RoleUnified, cluster.RolePrefill} {
		t.Run(string(role), func(t *testing.T) {
			addr := startWorkerWith(t, dir, Options{Role: role, Group: "g", ModelName: "tiny",
				Engine: engine.Options{KVCacheBytes: 16 << 20, MaxSeqs: 1, MaxBatchTokens: 16}})
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			w := tandemv1.NewWorkerClient(cc)
			call := func(ctx context.Context, id string, prompt []int32, maxTokens int32, timeout *durationpb.Duration) error {
				sp := &tandemv1.SamplingParams{MaxTokens: maxTokens, IgnoreEos: true}
				if role == cluster.RolePrefill {
					_, err := w.Prefill(ctx, &tandemv1.PrefillRequest{RequestId: id, PromptTokenIds: prompt, Sampling: sp, Attempt: 1, QueueTimeout: timeout,
						Destination: &tandemv1.KVDestination{Group: "nowhere", Tp: 1, RankAddresses: []string{"127.0.0.1:1"}}})
					return err
				}
				stream, err := w.Generate(ctx, &tandemv1.WorkerGenerateRequest{RequestId: id, PromptTokenIds: prompt, Sampling: sp, QueueTimeout: timeout})
				if err != nil {
					return err
				}
				for {
					m, err := stream.Recv()
					if err != nil || m.GetFinishReason() != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED {
						return err
					}
				}
			}
			// A long request takes the group's one sequence: a prompt of
			// 128 chunks, then (unified) tokens up to the context's end.
			long := make([]int32, 2040)
			for i := range long {
				long[i] = int32(i % 5000)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			busy := make(chan error, 1)
			go func() { busy <- call(ctx, "long", long, 8, nil) }()
			waitRunning(t, w)

			const timeout = 20 * time.Millisecond
			start := time.Now()
			err = call(t.Context(), "queued", []int32{1, 2, 3}, 4, durationpb.New(timeout))
			took := time.Since(start)
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("queued past its timeout: %v, want RESOURCE_EXHAUSTED", err)
			}
			if took < timeout || took > timeout+time.Second {
				t.Errorf("refused after %v, want just past %v", took, timeout)
			}
			select {
			case err := <-busy:
				t.Fatalf("the running request ended: %v", err)
			default:
			}
			if err := call(t.Context(), "bad", []int32{1}, 2, durationpb.New(-time.Second)); status.Code(err) != codes.InvalidArgument {
				t.Errorf("negative queue timeout: %v, want INVALID_ARGUMENT", err)
			}
			cancel()
			<-busy
		})
	}
}

// waitRunning waits until the group runs a request.
func waitRunning(t *testing.T, w tandemv1.WorkerClient) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		st, err := w.Stats(t.Context(), &tandemv1.StatsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetRunningRequests() > 0 {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("no request ran")
		}
	}
}
