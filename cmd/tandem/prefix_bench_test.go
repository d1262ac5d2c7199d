package main

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/serve"
	"github.com/tandemllm/tandem/bench/stats"
	"github.com/tandemllm/tandem/cluster"
)

// BenchmarkPrefixCaching runs `tandem bench`'s prefix_repetition workload
// (4 prefixes of 512 tokens, each shared by 6 prompts with 64 tokens of
// their own, 16 output tokens, 2 requests at a time) on two unified
// llama-160m groups of one rank, one with prefix caching and one without
// (--no-prefix-caching), in interleaved rounds on the same machine. It
// reports TTFT at the median and the prompt tokens each group computed
// (its Stats: prefix-cache queries less hits). The limit the saving is
// held against: caching cannot compute fewer than the first prompt of
// each prefix in full and the suffix of the others, 4·576 + 20·64 tokens
// a round.
func BenchmarkPrefixCaching(b *testing.B) {
	const (
		preset                         = "llama-160m"
		prefixLen, suffixLen, prefixes = 512, 64, 4
		prompts, outputLen, rounds     = 24, 16, 2
	)
	unified := []groupSpec{{name: "unified-0", role: cluster.RoleUnified, tp: 1}}
	workers := []string{"--kv-cache-mb", "1024", "--max-batch-tokens", "512"}
	sides := []struct {
		name string
		tc   *testCluster
	}{
		{"prefix caching on", startClusterWith(b, preset, unified, clusterOptions{workerArgs: workers})},
		{"prefix caching off", startClusterWith(b, preset, unified, clusterOptions{workerArgs: append(workers, "--no-prefix-caching")})},
	}
	w := serve.DefaultWorkload()
	w.DatasetName, w.NumPrompts, w.MaxConcurrency = "prefix_repetition", prompts, "2"
	w.PrefixRepetitionPrefixLen, w.PrefixRepetitionSuffixLen = prefixLen, suffixLen
	w.PrefixRepetitionNumPrefixes, w.PrefixRepetitionOutputLen = prefixes, outputLen
	ttft := make([][]float64, len(sides))
	computed, sent := make([]int64, len(sides)), make([]int64, len(sides))
	b.ResetTimer()
	for range b.N {
		for r := range rounds {
			for i, s := range sides {
				// A new seed each round: new prefixes, cold for both sides.
				w.Seed = uint64(r)
				before := s.tc.workerStats(b, "unified-0")
				res, err := serve.Run(b.Context(), serve.Config{Workload: w, Addr: s.tc.coord.grpcAddr, Tokenizer: preset, DisableProgress: true}, io.Discard, io.Discard)
				if err != nil {
					b.Fatal(err)
				}
				if res[0].Failed > 0 {
					b.Fatalf("%s: %d requests failed: %v", s.name, res[0].Failed, res[0].ErrorsByCode)
				}
				after := s.tc.workerStats(b, "unified-0")
				computed[i] += (after.GetPrefixCacheQueries() - after.GetPrefixCacheHits()) - (before.GetPrefixCacheQueries() - before.GetPrefixCacheHits())
				ttft[i] = append(ttft[i], res[0].Samples[bench.TTFT]...)
				sent[i] += int64(res[0].TotalInput)
			}
		}
	}
	b.StopTimer()
	n := int64(b.N * rounds)
	floor := int64(prefixes*(prefixLen+suffixLen) + (prompts-prefixes)*suffixLen)
	var lines []string
	for i, s := range sides {
		p50 := stats.Median(ttft[i]) * 1e3
		b.ReportMetric(p50, "ttft_p50_ms_"+strings.Fields(s.name)[2])
		b.ReportMetric(float64(computed[i]/n), "prefill_tokens_"+strings.Fields(s.name)[2])
		lines = append(lines, fmt.Sprintf("%s: TTFT P50 %.1f ms, %d prompt tokens computed a round (of %d sent)",
			s.name, p50, computed[i]/n, sent[i]/n))
	}
	b.Logf("%s; %s; limit: %d tokens a round with caching", lines[0], lines[1], floor)
}
