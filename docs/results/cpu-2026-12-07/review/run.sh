#!/bin/sh
# Issue 18's decode rows again after the last read of the change (aa1c249:
# decode attention folds each span through softmaxSpan), five runs each,
# the commands of docs/benchmarking.md ("CPU decode, prefill and the
# ring"), on a binary of that code: E=/tmp/fin9/engine.test (go test -c
# ./engine). Prefill's paths did not change. usage (from the repository
# root): run.sh OUTDIR
out=$1; E=${E:-/tmp/fin9/engine.test}
mkdir -p "$out"
run() { # name args...
	f=$out/$1.txt; shift
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	(cd engine && flock /tmp/tandem-bench.lock "$E" -test.run '^$' "$@") >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
run decode-b8-32 -test.bench 'BenchmarkDecode/.*/.*/batch-(8|32)/threads-2' -test.benchtime 10x -test.count 5
run decode-b1 -test.bench 'BenchmarkDecode/.*/.*/batch-1/' -test.benchtime 10x -test.count 5
