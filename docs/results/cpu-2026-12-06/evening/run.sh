#!/bin/bash
# Issue 18's CPU figures, one section after another under the bench lock.
cd /work/main/engine
E=/tmp/b18/engine.test
sec() { # name, args...
  echo "## $1 start $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> /tmp/b18/$1.txt
  flock /tmp/tandem-bench.lock nice -n -10 $E -test.run '^$' "${@:2}" >> /tmp/b18/$1.txt 2>&1
  echo "## $1 end $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> /tmp/b18/$1.txt
}
sec batch1 -test.bench 'BenchmarkDecode/.*/.*/batch-1/' -test.benchtime 10x -test.count 5
sec batched -test.bench 'BenchmarkDecode/.*/.*/batch-(8|32)/threads-2' -test.benchtime 10x -test.count 5
sec prefill -test.bench 'BenchmarkPrefill/.*/(f32|bf16)/' -test.benchtime 3x -test.count 5
echo done >> /tmp/b18/status
