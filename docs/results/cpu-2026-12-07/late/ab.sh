#!/bin/sh
# A/B of main before (old) and after (new) this session's kernels: prefill of llama-160m f32/bf16 and decode batch 1/8 of gpt2-124m and llama-160m in f32/bf16/f16, three rounds alternated.
# old: go test -c -o $B/eng-old.test ./engine at 0cc903f (main before these changes); new: the same at 985586c.
# usage: B=DIR ab.sh > ab.txt
cd "$(dirname "$0")/../../../../engine"
B=${B:?set B to the directory of the two binaries}
for r in 1 2 3; do for v in old new; do
  echo "== $v round $r"
  flock /tmp/tandem-bench.lock $B/eng-$v.test -test.run '^$' -test.bench 'BenchmarkPrefill/llama-160m/(f32|bf16)/' -test.benchtime 3x -test.count 1 2>&1 | grep Bench
  flock /tmp/tandem-bench.lock $B/eng-$v.test -test.run '^$' -test.bench 'BenchmarkDecode/(llama-160m|gpt2-124m)/(f32|bf16|f16)/batch-(1|8)/threads-2' -test.benchtime 10x -test.count 1 2>&1 | grep Bench
done; done
