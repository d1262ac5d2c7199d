#!/bin/bash
# tandem bench against two deployments of llama-160m f32 (TP 1, the
# preset's default dtype), up at once and measured in turn each round:
# OLD, a build of 20d5820 (the previous stop), and NEW, a build of
# 4c43bc1 (this session: prefill attention one KV head at a time, the
# softmax in one kernel call, SSE moves kept out, KVWrite prefetching).
# 3 rounds at concurrency 1, 8, 32 (6, 24, 64 prompts of 128 tokens, 32
# out), as ../late/serve.sh (ROUNDS sets another number of rounds).
# usage: serve.sh OUTDIR
OLD=${OLD:-/tmp/s8/tandem-old}; NEW=${NEW:-/tmp/s8/tandem-new}; D=$1; mkdir -p "$D"
M=${M:-/tmp/s8/llama-160m-f32}
[ -d "$M" ] || $NEW model init --preset llama-160m --out "$M" || exit 1
pids=()
up() { # name binary port
  $2 up --model "$M" --mode unified --tp 1 --grpc-addr 127.0.0.1:$3 --http-addr 127.0.0.1:$(($3+1)) > "$D/up-$1.log" 2>&1 &
  pids+=($!)
}
trap 'kill ${pids[@]} 2>/dev/null; wait' EXIT
up old $OLD 19690
up new $NEW 19790
for p in 19691 19791; do
  for i in $(seq 600); do curl -sf http://127.0.0.1:$p/readyz >/dev/null && break; sleep 0.5; done
  curl -sf http://127.0.0.1:$p/readyz >/dev/null || { echo "not ready: $p"; exit 1; }
done
for r in $(seq "${ROUNDS:-3}"); do
  for dep in old:19690 new:19790; do
    name=${dep%:*}; port=${dep#*:}
    echo "# round $r $name $(date -u +%H:%M:%S) $(cat /proc/loadavg)"
    for cn in 1:6 8:24 32:64; do
      c=${cn%:*}; n=${cn#*:}
      flock /tmp/tandem-bench.lock $NEW bench --addr 127.0.0.1:$port --num-prompts $n --random-input-len 128 --random-output-len 32 --max-concurrency $c --tokenizer "$M" \
        --seed $r --num-warmups 2 --disable-tqdm --save-result --result-dir "$D" --result-filename $name-r$r-c$c.json > /dev/null 2>&1 || echo "failed: $name r$r c$c"
    done
  done
done
