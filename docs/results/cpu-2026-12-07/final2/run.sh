#!/bin/sh
# Issue 18's decode rows on the session's final code (29e85f8: streamed
# weights copied onto 2 MiB pages, the embeddings in place, decode
# attention prefetching its values), three runs each, the commands of
# ../arena/run.sh; E=/tmp/fin3/engine.test (go test -c ./engine).
# usage (from the repository root): run.sh OUTDIR
out=$1; E=${E:-/tmp/fin3/engine.test}
mkdir -p "$out"
run() { # name dir binary args...
	f=$out/$1.txt; d=$2; b=$3; shift 3
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	(cd "$d" && flock /tmp/tandem-bench.lock "$b" -test.run '^$' "$@") >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
run decode-b1 engine "$E" -test.bench 'BenchmarkDecode/.*/.*/batch-1/' -test.benchtime 10x -test.count 3
run decode-b8 engine "$E" -test.bench 'BenchmarkDecode/.*/.*/batch-8/threads-2' -test.benchtime 10x -test.count 3
