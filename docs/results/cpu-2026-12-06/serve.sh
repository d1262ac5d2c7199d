#!/bin/bash
# llama-160m f32, one unified group of TP 1 on every core; 5 rounds of tandem bench at concurrency 1, 8, 32.
T=/tmp/cpu-tandem; D=/tmp/cpu-results/serve; mkdir -p $D
$T up --preset llama-160m --mode unified --tp 1 --grpc-addr 127.0.0.1:19190 --http-addr 127.0.0.1:19191 > $D/up.log 2>&1 &
UP=$!
trap 'kill $UP; wait $UP' EXIT
for i in $(seq 600); do curl -sf http://127.0.0.1:19191/readyz >/dev/null && break; sleep 0.5; done
curl -sf http://127.0.0.1:19191/readyz || { echo "not ready"; tail $D/up.log; exit 1; }
for r in 1 2 3 4 5; do
  echo "# round $r $(date -u +%H:%M:%S) $(cat /proc/loadavg)"
  for cn in 1:6 8:24 32:64; do
    c=${cn%:*}; n=${cn#*:}
    $T bench --addr 127.0.0.1:19190 --num-prompts $n --random-input-len 128 --random-output-len 32 --max-concurrency $c \
      --seed $r --num-warmups 2 --disable-tqdm --save-result --result-dir $D --result-filename r$r-c$c.json 2>&1 | grep -v '^$' || true
  done
done
kill $UP; wait $UP; trap - EXIT
# A/B: prefill before (ef28112: dot-product attention, 4 chunks a thread) and after, alternated.
for i in 1 2 3; do
  for v in old new; do
    B=/tmp/cpu-engine.test; [ $v = old ] && B=/tmp/cpu-engine-old.test
    echo "# ab $v $i $(date -u +%H:%M:%S) $(cat /proc/loadavg)"
    $B -test.run '^$' -test.bench 'BenchmarkPrefill/llama-160m/f32/(512|2048)$' -test.benchtime 3x 2>&1 | grep Bench | sed "s/^/$v /"
  done
done
