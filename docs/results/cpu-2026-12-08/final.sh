#!/bin/bash
# Five rounds on the final code (two threads): batch 1, 8 and 32 decode of
# every preset model and weight dtype, then 512- and 2048-token prefill in
# F32 and BF16; then five runs of TP-1/2/4 decode of llama-160m F32.
cd "$(dirname "$0")/../../../engine"
for r in 1 2 3 4 5; do
  echo "== round$r"
  flock /tmp/tandem-bench.lock "${BIN:-.}/engine-final.test" -test.run '^$' -test.bench 'BenchmarkDecode/.*/.*/batch-(1|8)/threads-2' -test.benchtime 60x 2>&1 | grep Benchmark
  flock /tmp/tandem-bench.lock "${BIN:-.}/engine-final.test" -test.run '^$' -test.bench 'BenchmarkDecode/.*/.*/batch-32/threads-2' -test.benchtime 30x 2>&1 | grep Benchmark
  flock /tmp/tandem-bench.lock "${BIN:-.}/engine-final.test" -test.run '^$' -test.bench 'BenchmarkPrefill/.*/(f32|bf16)/' -test.benchtime 5x 2>&1 | grep Benchmark
done
echo "== tp"
flock /tmp/tandem-bench.lock "${BIN:-.}/engine-final.test" -test.run '^$' -test.bench 'BenchmarkTPDecode' -test.benchtime 40x -test.count 5 2>&1 | grep Benchmark
