#!/bin/sh
# The binaries: /tmp/tp18-old.test is `go test -c ./engine` at ddfc0fe (main
# before recursive doubling), /tmp/tp18-new.test the same at 5a8b0d6 (the doubling commit; later ones change tests and comments).
# Run from the repository root.
# usage: tp.sh OUTDIR ROUNDS — BenchmarkTPDecode, old and new engine binaries, ABBA
out=$1; rounds=$2
mkdir -p "$out"
cd engine || exit 1  # the engine tests run in their package directory
run() {
	f=$out/tp-$1-$2.txt
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
	flock /tmp/tandem-bench.lock /tmp/tp18-$1.test -test.run '^$' -test.bench 'BenchmarkTPDecode' -test.benchtime 40x -test.count 1 >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
for i in $(seq 1 "$rounds"); do
	if [ $((i % 2)) -eq 1 ]; then run old "$i"; run new "$i"; else run new "$i"; run old "$i"; fi
done
