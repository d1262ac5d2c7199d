#!/bin/bash
# Issue 18's rows whose code this session did not change, rerun on the
# final code: batch 1 on one thread, the allreduce (TCP ring and shared
# memory, 2, 4 and 8 ranks), TP-1/2/4 decode of llama-160m F32; five runs
# each. usage: BIN=DIR unchanged-rows.sh (engine-last.test, ring-final.test)
root="$(dirname "$0")/../../.."
cd "$root/engine" && flock /tmp/tandem-bench.lock "$BIN/engine-last.test" -test.run '^$' -test.bench 'BenchmarkDecode/.*/.*/batch-1/threads-1' -test.benchtime 60x -test.count 5 2>&1 | grep Benchmark
cd "$root/nccl/ring" && flock /tmp/tandem-bench.lock "$BIN/ring-final.test" -test.run '^$' -test.bench 'BenchmarkAllReduce(Shm)?/n=./' -test.count 5 2>&1 | grep Benchmark
cd "$root/engine" && flock /tmp/tandem-bench.lock "$BIN/engine-last.test" -test.run '^$' -test.bench 'BenchmarkTPDecode' -test.benchtime 40x -test.count 5 2>&1 | grep Benchmark
