#!/bin/bash
# Five rounds of BF16 batch 32 (two threads, per-op timers), alternating
# order: old (915a8b8, BF16 batches on the packed path) and new (BF16
# batches of 17-72 rows of matrices of 8 MiB or more on the transposed
# path, 50d7480; b32-bf16-ab-every-matrix.txt: every BF16 matrix, d0c2fac).
cd "$(dirname "$0")/../../../engine"
for r in 1 2 3 4 5; do
  if [ $((r % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for v in $order; do
    echo "== $v"
    flock /tmp/tandem-bench.lock "${BIN:-.}/engine-$v.test" -test.run '^$' -test.bench 'BenchmarkDecode/.*/bf16/batch-32/threads-2' -test.benchtime 30x 2>&1 | grep Benchmark
  done
done
