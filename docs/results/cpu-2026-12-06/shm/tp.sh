#!/bin/sh
# BenchmarkTPDecode with the engine before shared memory (old: b58c56d, TCP),
# with it as first landed (futex: in-process ranks yield, then sleep in a
# futex) and as kept (nap: in-process ranks yield, then sleep on timers);
# binaries /tmp/shm/tp-old.test, tp-new.test, tp-new2.test (`go test -c
# ./engine`). Then the in-process shm allreduce rows, futex against nap
# (/tmp/shm/ring.test, ring3.test). Run from the repository root.
# usage: tp.sh OUTDIR ROUNDS
out=$1; rounds=$2
tp() {
	f=$out/tp-$1-$2.txt
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	(cd engine && flock /tmp/tandem-bench.lock nice -n -10 /tmp/shm/$3 -test.run '^$' \
		-test.bench 'BenchmarkTPDecode' -test.benchtime 40x -test.count 1) >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
ring() {
	f=$out/inproc-$1-$2.txt
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	(cd nccl/ring && flock /tmp/tandem-bench.lock nice -n -10 /tmp/shm/$3 -test.run '^$' \
		-test.bench 'BenchmarkAllReduceShm/n=[248]/(4KiB|16KiB|1MiB)$' -test.count 1 2>&1 | grep -v WARN) >>"$f"
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
for i in $(seq 1 "$rounds"); do
	tp old "$i" tp-old.test; tp futex "$i" tp-new.test; tp nap "$i" tp-new2.test
	ring futex "$i" ring.test; ring nap "$i" ring3.test
done
