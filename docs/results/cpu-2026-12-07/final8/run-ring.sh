#!/bin/sh
# Issue 18's allreduce and TP rows on the final code of the session of
# 2026-12-07 10:36-13:36 (e0ba116), five runs each, the commands of
# docs/benchmarking.md ("CPU decode, prefill and the ring"), on binaries
# of that code: E=/tmp/fin9/engine.test (go test -c ./engine),
# G=/tmp/fin9/ring.test (go test -c ./nccl/ring). usage (from the
# repository root): run-ring.sh OUTDIR
out=$1; E=${E:-/tmp/fin9/engine.test}; G=${G:-/tmp/fin9/ring.test}
mkdir -p "$out"
run() { # name dir binary args...
	f=$out/$1.txt; d=$2; b=$3; shift 3
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	(cd "$d" && flock /tmp/tandem-bench.lock "$b" -test.run '^$' "$@") >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
run allreduce nccl/ring "$G" -test.bench 'BenchmarkAllReduce(Shm)?/n=./(4KiB|16KiB|1MiB|4MiB|16MiB)$' -test.count 5
run tp engine "$E" -test.bench 'BenchmarkTPDecode' -test.benchtime 40x -test.count 5
