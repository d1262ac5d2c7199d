#!/bin/sh
# BenchmarkAllReduceProcs: ranks as processes, shared memory and TCP.
# Binary: /tmp/shm/ring2.test is `go test -c ./nccl/ring` at the commit
# that fixed a closing rank failing its peers' last call (the first run.sh
# rounds used a binary without it; their procs files were dropped).
# Run from the repository root. usage: procs.sh OUTDIR ROUNDS
out=$1; rounds=$2; BIN=${BIN:-/tmp/shm/ring2.test} # procs-final/: BIN at e457cfc
for i in $(seq 1 "$rounds"); do
	f=$out/procs-$i.txt
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	(cd nccl/ring && flock /tmp/tandem-bench.lock nice -n -10 $BIN -test.run '^$' \
		-test.bench 'BenchmarkAllReduceProcs' -test.count 1 2>&1 | grep -v WARN) >>"$f"
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
done
