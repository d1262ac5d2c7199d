#!/bin/sh
# /tmp/ring18-segN.test: `go test -c ./nccl/ring` at 70d37f5 with segmentBytes = N KiB.
# usage: seg.sh OUTDIR ROUNDS VARIANT... (variants alternate, reversed each round)
out=$1; rounds=$2; shift 2
mkdir -p "$out"
for i in $(seq 1 "$rounds"); do
	for v in "$@"; do
		f=$out/ring-$v-$i.txt
		echo "# start $(date -u +%T) $(cat /proc/loadavg)" >"$f"
		flock /tmp/tandem-bench.lock /tmp/ring18-$v.test -test.run '^$' \
			-test.bench 'BenchmarkAllReduce/^n=(4|8)$/^(1MiB|4MiB|16MiB)$' -test.count 1 >>"$f" 2>&1
		echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
	done
	set -- $(echo "$@" | awk '{for(i=NF;i>0;i--) printf "%s ", $i}')
done
