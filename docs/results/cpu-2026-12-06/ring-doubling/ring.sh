#!/bin/sh
# The binaries: /tmp/ring18-old.test is `go test -c ./nccl/ring` at ddfc0fe (main
# before recursive doubling), /tmp/ring18-new.test the same at 5a8b0d6 (the doubling commit; later ones change tests and comments).
# Run from the repository root.
# Alternates the old (main at ddfc0fe) and new ring test binaries, ABBA,
# one invocation each per round, under the shared bench lock.
# usage: ring.sh OUTDIR ROUNDS
out=$1; rounds=$2
mkdir -p "$out"
run() { # version round
	f=$out/ring-$1-$2.txt
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	flock /tmp/tandem-bench.lock /tmp/ring18-$1.test -test.run '^$' \
		-test.bench 'BenchmarkAllReduce/n=./(4KiB|16KiB|64KiB|1MiB|4MiB|16MiB|64MiB)$' -test.count 1 >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
for i in $(seq 1 "$rounds"); do
	if [ $((i % 2)) -eq 1 ]; then run old "$i"; run new "$i"; else run new "$i"; run old "$i"; fi
done
