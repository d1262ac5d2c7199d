#!/bin/bash
# Calibration and validation runs of issue 17 (docs/planning.md), under the bench lock.
set -u
T=${T:-/tmp/plan-bin/tandem}
OUT=${OUT:-/tmp/planruns}
common="--preset llama-160m --tp 1,2,4 --modes unified,disaggregated --rounds 2 --save-detailed --disable-tqdm"
run() { # name, extra args
  echo "$(date -u +%T) start $1 load: $(cat /proc/loadavg)" >> $OUT/loadavg.txt
  ( while sleep 30; do echo "$(date -u +%T) $1 $(cat /proc/loadavg)" >> $OUT/loadavg.txt; done ) &
  mon=$!
  flock /tmp/tandem-bench.lock nice -n -10 $T bench compare $common "${@:2}" --result-dir $OUT/$1 > $OUT/$1.log 2>&1
  echo "$(date -u +%T) end $1 rc=$? load: $(cat /proc/loadavg)" >> $OUT/loadavg.txt
  kill $mon
}
cal="--max-concurrency 4 --num-prompts 16 --random-input-len 256 --random-output-len 32 --seed 1"
val="--max-concurrency 2 --num-prompts 12 --random-input-len 512 --random-output-len 32 --seed 2"
if [ -z "${LINK_ONLY:-}" ]; then
  run calibration-run $cal
  run validation-run $val
fi
if [ -z "${NO_LINK:-}" ]; then
  run calibration-run $cal --link eth-25g
  run validation-run $val --link eth-25g
fi
echo done >> $OUT/loadavg.txt
