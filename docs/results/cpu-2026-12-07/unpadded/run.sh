#!/bin/sh
# Issue 18's decode and prefill rows on d0a5816 (the packed path
# reading activations in place), five runs each, the commands of
# docs/benchmarking.md ("CPU decode, prefill and the ring"), on a binary
# of that code: E=/tmp/fin7/engine.test (go test -c ./engine). Default
# kernels (amx on this machine). Batch 1 (which never copied its
# activations) was run after the other two, so that the ratios of batch 8
# to batch 1 come from the same half hour. usage (from the repository
# root): run.sh OUTDIR
out=$1; E=${E:-/tmp/fin7/engine.test}
mkdir -p "$out"
run() { # name args...
	f=$out/$1.txt; shift
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	(cd engine && flock /tmp/tandem-bench.lock "$E" -test.run '^$' "$@") >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
run decode-b8-32 -test.bench 'BenchmarkDecode/.*/.*/batch-(8|32)/threads-2' -test.benchtime 10x -test.count 5
run prefill -test.bench 'BenchmarkPrefill/.*/(f32|bf16)/' -test.benchtime 3x -test.count 5
run decode-b1 -test.bench 'BenchmarkDecode/.*/.*/batch-1/' -test.benchtime 10x -test.count 5
