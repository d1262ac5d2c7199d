#!/bin/sh
# Issue 18's rows on the 2-core AMD EPYC VM (AVX-512 with BF16, no AMX)
# on main at 5633d0d (decode of one row by bands of weight rows), five
# runs each, the commands of docs/benchmarking.md ("CPU decode, prefill
# and the ring"): E=go test -c ./engine, G=go test -c ./nccl/ring of that
# code. usage (from the repository root): run.sh OUTDIR
out=$1; E=${E:-/tmp/fin/engine.test}; G=${G:-/tmp/fin/ring.test}
mkdir -p "$out"
run() { # name dir binary args...
	f=$out/$1.txt; d=$2; b=$3; shift 3
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	(cd "$d" && flock /tmp/tandem-bench.lock "$b" -test.run '^$' "$@") >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
run decode-b1 engine "$E" -test.bench 'BenchmarkDecode/.*/.*/batch-1/' -test.benchtime 10x -test.count 5
run decode-b8 engine "$E" -test.bench 'BenchmarkDecode/.*/.*/batch-8/threads-2' -test.benchtime 10x -test.count 5
run decode-b32 engine "$E" -test.bench 'BenchmarkDecode/.*/.*/batch-32/threads-2' -test.benchtime 10x -test.count 5
run prefill engine "$E" -test.bench 'BenchmarkPrefill/.*/(f32|bf16)/' -test.benchtime 3x -test.count 5
run allreduce nccl/ring "$G" -test.bench 'BenchmarkAllReduce(Shm)?/n=./(4KiB|16KiB|1MiB|4MiB|16MiB)$' -test.count 5
run tp engine "$E" -test.bench 'BenchmarkTPDecode' -test.benchtime 40x -test.count 5
