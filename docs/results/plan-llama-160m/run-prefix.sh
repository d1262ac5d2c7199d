#!/bin/bash
# A prefix_repetition validation run (prefix caching on).
set -u
T=/tmp/plan-bin/tandem
OUT=/tmp/planruns
echo "$(date -u +%T) start prefix-run load: $(cat /proc/loadavg)" >> $OUT/loadavg.txt
( while sleep 30; do echo "$(date -u +%T) prefix-run $(cat /proc/loadavg)" >> $OUT/loadavg.txt; done ) &
mon=$!
flock /tmp/tandem-bench.lock nice -n -10 $T bench compare --preset llama-160m --tp 1,2 --modes unified,disaggregated --rounds 2 --save-detailed --disable-tqdm \
  --dataset-name prefix_repetition --prefix-repetition-prefix-len 384 --prefix-repetition-suffix-len 64 --prefix-repetition-num-prefixes 2 \
  --prefix-repetition-output-len 16 --num-prompts 12 --max-concurrency 2 --seed 3 --result-dir $OUT/prefix-run > $OUT/prefix-run.log 2>&1
echo "$(date -u +%T) end prefix-run rc=$? load: $(cat /proc/loadavg)" >> $OUT/loadavg.txt
kill $mon
