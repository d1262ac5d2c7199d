#!/bin/sh
# Issue 18's decode rows after the loader copies every weight matrix into
# its 2 MiB-page arena (engine: hostResident), five runs each, the
# commands of ../all/run.sh; E=/tmp/fin2/engine.test (go test -c
# ./engine). usage (from the repository root): run.sh OUTDIR
out=$1; E=${E:-/tmp/fin2/engine.test}
mkdir -p "$out"
run() { # name dir binary args...
	f=$out/$1.txt; d=$2; b=$3; shift 3
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	(cd "$d" && flock /tmp/tandem-bench.lock "$b" -test.run '^$' "$@") >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
run decode-b1 engine "$E" -test.bench 'BenchmarkDecode/.*/.*/batch-1/' -test.benchtime 10x -test.count 5
run decode-b8-32 engine "$E" -test.bench 'BenchmarkDecode/.*/.*/batch-(8|32)/threads-2' -test.benchtime 10x -test.count 5
