#!/bin/bash
# Five rounds on the final code (two threads) of
# ../cpu-2026-12-07f/final.sh: batch 1, 8 and 32 decode of every preset
# model and weight dtype, then 512- and 2048-token prefill in F32 and
# BF16; then five runs of TP-1/2/4 decode of llama-160m F32.
# usage: BIN=DIR final.sh, with engine-final.test in DIR
"$(dirname "$0")/../cpu-2026-12-07f/final.sh" || exit 1
cd "$(dirname "$0")/../../../engine" || exit 1
echo "== tp"
flock /tmp/tandem-bench.lock "${BIN:-.}/engine-final.test" -test.run '^$' -test.bench 'BenchmarkTPDecode' -test.benchtime 40x -test.count 5 2>&1 | grep Benchmark
