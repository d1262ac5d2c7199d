#!/bin/sh
# A: go test -c ./nccl/ring at main (512 KiB slots); B: the variant under test
# (slot-2MiB.txt: 2 MiB slots; slot-256KiB.txt: 256 KiB; own-slice.txt: a rank
# keeps its own 1/n in its buffer). Run from anywhere; alternates A and B.
cd "$(git rev-parse --show-toplevel)/nccl/ring"
for i in 1 2 3; do for v in A B; do
  echo "# $v $i $(date -u +%T) $(cat /proc/loadavg)"
  flock /tmp/tandem-bench.lock nice -n -10 /tmp/shm/ring$v.test -test.run '^$' -test.bench 'BenchmarkAllReduceShm/n=[248]/(1MiB|4MiB|16MiB)$' -test.count 1 2>&1 | grep '^Bench' | sed "s/^/$v /"
done; done
