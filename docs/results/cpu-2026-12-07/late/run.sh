#!/bin/sh
# Issue 18's rows on the final code of the session of 2026-12-07 05:50-08:50
# (477118c), five runs each, with the
# commands of docs/benchmarking.md ("CPU decode, prefill and the ring"),
# on binaries of the final code: E=/tmp/fin5/engine.test (go test -c
# ./engine), G=/tmp/fin5/ring.test (go test -c ./nccl/ring). Default
# kernels (amx on this machine: f32 and f16 take the AVX-512 paths, bf16
# the AMX ones). usage (from the repository root): run.sh OUTDIR
out=$1; E=${E:-/tmp/fin5/engine.test}; G=${G:-/tmp/fin5/ring.test}
mkdir -p "$out"
run() { # name dir binary args...
	f=$out/$1.txt; d=$2; b=$3; shift 3
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	(cd "$d" && flock /tmp/tandem-bench.lock "$b" -test.run '^$' "$@") >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
run decode-b1 engine "$E" -test.bench 'BenchmarkDecode/.*/.*/batch-1/' -test.benchtime 10x -test.count 5
run decode-b8-32 engine "$E" -test.bench 'BenchmarkDecode/.*/.*/batch-(8|32)/threads-2' -test.benchtime 10x -test.count 5
run prefill engine "$E" -test.bench 'BenchmarkPrefill/.*/(f32|bf16)/' -test.benchtime 3x -test.count 5
run allreduce nccl/ring "$G" -test.bench 'BenchmarkAllReduce(Shm)?/n=./(4KiB|16KiB|1MiB|4MiB|16MiB)$' -test.count 5
run tp engine "$E" -test.bench 'BenchmarkTPDecode' -test.benchtime 40x -test.count 5
