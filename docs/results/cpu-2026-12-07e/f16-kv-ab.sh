#!/bin/bash
# Five rounds: the F16 rows at batch 1, 8 and 32 (two threads), before
# (f28dd76, F32 KV) and after (915a8b8, F16 KV), alternating order. The
# pattern f16 also takes the bf16 rows, whose path did not change.
cd "$(dirname "$0")/../../../engine"
for r in 1 2 3 4 5; do
  if [ $((r % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for v in $order; do
    echo "== $v round $r"
    flock /tmp/tandem-bench.lock "${BIN:-.}/engine-$v.test" -test.run '^$' -test.bench 'BenchmarkDecode/.*/f16/batch-(1|8)/threads-2' -test.benchtime 60x 2>&1 | grep Benchmark
    flock /tmp/tandem-bench.lock "${BIN:-.}/engine-$v.test" -test.run '^$' -test.bench 'BenchmarkDecode/(gpt2-124m|llama-160m)/f16/batch-32/threads-2' -test.benchtime 30x 2>&1 | grep Benchmark
  done
done
