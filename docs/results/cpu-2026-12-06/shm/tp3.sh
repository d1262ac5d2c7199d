#!/bin/sh
# The kept code (yield: in-process ranks wait by yielding, /tmp/shm/tp-new3.test,
# `go test -c ./engine` at the commit that made it so) against the futex
# variant and TCP (binaries as in tp.sh). Run from the repository root.
# usage: tp3.sh OUTDIR
out=$1
tp() {
	f=$out/tp-$1-$2.txt
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	(cd engine && flock /tmp/tandem-bench.lock nice -n -10 /tmp/shm/$3 -test.run '^$' \
		-test.bench 'BenchmarkTPDecode' -test.benchtime 40x -test.count 1) >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
for i in 1 2 3 4 5; do tp yield $i tp-new3.test; tp futex2 $i tp-new.test; tp old2 $i tp-old.test; done
