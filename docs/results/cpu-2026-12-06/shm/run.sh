#!/bin/sh
# Shared-memory allreduce against the TCP ring, and TP decode before/after.
# Binaries: /tmp/shm/ring.test is `go test -c ./nccl/ring` at 18b5e67;
# /tmp/shm/tp-old.test `go test -c ./engine` at b58c56d (TCP only),
# /tmp/shm/tp-new.test the same at 18b5e67 (ranks share memory).
# Its ring-*.txt are kept. Its procs-*.txt came from a binary whose closing
# rank failed its peers' last call and were replaced by procs.sh's; its
# tp-*.txt were replaced by tp.sh's (futex against nap as well).
# Run from the repository root. usage: run.sh OUTDIR ROUNDS
out=$1; rounds=$2
mkdir -p "$out"
stamp() { echo "# $1 $(date -u +%T) $(cat /proc/loadavg)" >>"$2"; }
ring() {
	f=$out/ring-$1.txt; stamp start "$f"
	(cd nccl/ring && flock /tmp/tandem-bench.lock nice -n -10 /tmp/shm/ring.test -test.run '^$' \
		-test.bench 'BenchmarkAllReduce(Shm)?/n=./(4KiB|16KiB|1MiB|4MiB|16MiB)$' -test.count 1 2>&1 | grep -v WARN) >>"$f"
	stamp end "$f"
	f=$out/procs-$1.txt; stamp start "$f"
	(cd nccl/ring && flock /tmp/tandem-bench.lock nice -n -10 /tmp/shm/ring.test -test.run '^$' \
		-test.bench 'BenchmarkAllReduceProcs' -test.count 1 2>&1 | grep -v WARN) >>"$f"
	stamp end "$f"
}
tp() {
	f=$out/tp-$1-$2.txt; stamp start "$f"
	(cd engine && flock /tmp/tandem-bench.lock nice -n -10 /tmp/shm/tp-$1.test -test.run '^$' \
		-test.bench 'BenchmarkTPDecode' -test.benchtime 40x -test.count 1) >>"$f" 2>&1
	stamp end "$f"
}
for i in $(seq 1 "$rounds"); do
	ring "$i"
	if [ $((i % 2)) -eq 1 ]; then tp old "$i"; tp new "$i"; else tp new "$i"; tp old "$i"; fi
done
