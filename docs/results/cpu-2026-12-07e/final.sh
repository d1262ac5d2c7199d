#!/bin/bash
# Five rounds of batch 1, 8 and 32 decode on the final code (two threads,
# per-op timers): every preset model and weight dtype.
cd "$(dirname "$0")/../../../engine"
for r in 1 2 3 4 5; do
  echo "== round$r"
  flock /tmp/tandem-bench.lock "${BIN:-.}/engine-final.test" -test.run '^$' -test.bench 'BenchmarkDecode/.*/.*/batch-(1|8)/threads-2' -test.benchtime 60x 2>&1 | grep Benchmark
  flock /tmp/tandem-bench.lock "${BIN:-.}/engine-final.test" -test.run '^$' -test.bench 'BenchmarkDecode/.*/.*/batch-32/threads-2' -test.benchtime 30x 2>&1 | grep Benchmark
done
