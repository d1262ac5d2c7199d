package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemllm/tandem/cluster"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// BenchmarkCoordinatorOverhead measures what the coordinator adds to the
// time to first token: TTFT of a Generate through the coordinator minus
// TTFT of the same request sent straight to a unified group's leader, at
// the median. The limit it is held against: 1 ms.
func BenchmarkCoordinatorOverhead(b *testing.B) {
	tc := startCluster(b, "tiny", []groupSpec{{name: "unified-0", role: cluster.RoleUnified, tp: 1}})
	m, err := cluster.WatchMembership(b.Context(), tc.cli)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	g, err := m.WaitReady(b.Context(), "unified-0")
	if err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient(g.Ranks[0].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	leader := tandemv1.NewWorkerClient(conn)
	prompt := []int32{15496, 11, 995, 13, 383, 2068, 7586, 21831}
	sp := greedyParams(1)

	viaCoordinator := func() time.Duration {
		start := time.Now()
		stream, err := tc.client.Generate(b.Context(), &tandemv1.GenerateRequest{
			Prompt: &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: prompt}}, Sampling: sp,
		})
		if err != nil {
			b.Fatal(err)
		}
		return firstToken(b, start, stream)
	}
	n := 0
	direct := func() time.Duration {
		n++
		start := time.Now()
		stream, err := leader.Generate(b.Context(), &tandemv1.WorkerGenerateRequest{RequestId: fmt.Sprint("direct-", n), PromptTokenIds: prompt, Sampling: sp})
		if err != nil {
			b.Fatal(err)
		}
		return firstToken(b, start, stream)
	}
	for range 5 { // warm up connections and caches
		viaCoordinator()
		direct()
	}
	var via, dir []time.Duration
	b.ResetTimer()
	for b.Loop() {
		for range 20 { // interleaved, so drift hits both alike
			via = append(via, viaCoordinator())
			dir = append(dir, direct())
		}
	}
	b.StopTimer()
	pv, pd := median(via), median(dir)
	overhead := float64(pv-pd) / float64(time.Millisecond)
	b.ReportMetric(float64(pv)/float64(time.Millisecond), "ttft_coordinator_ms_p50")
	b.ReportMetric(float64(pd)/float64(time.Millisecond), "ttft_leader_ms_p50")
	b.ReportMetric(overhead, "overhead_ms_p50")
	b.Logf("coordinator overhead at P50: %.3f ms (TTFT %.3f ms through the coordinator, %.3f ms at the leader, %d requests each); limit 1 ms",
		overhead, float64(pv)/1e6, float64(pd)/1e6, len(via))
}

// firstToken reads a stream to its end and returns when its first token
// came.
func firstToken[T any](b *testing.B, start time.Time, stream grpc.ServerStreamingClient[T]) time.Duration {
	var ttft time.Duration
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return ttft
		}
		if err != nil {
			b.Fatal(err)
		}
		if m, ok := any(msg).(interface{ GetTokenIds() []int32 }); ttft == 0 && ok && len(m.GetTokenIds()) > 0 {
			ttft = time.Since(start)
		}
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
