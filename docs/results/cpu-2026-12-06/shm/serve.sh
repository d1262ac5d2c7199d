#!/bin/bash
# tandem bench against three deployments of llama-160m f32, up at once and
# measured in turn each round: TP 1; TP 2 sharing memory (the default);
# TP 2 with NCCL_SHM_DISABLE=1 (TCP). 5 rounds at concurrency 1, 8, 32
# (6, 24, 64 prompts of 128 tokens, 32 out), as ../serve.sh did for TP 1.
# T: tandem built at 486dd5d. usage: serve.sh OUTDIR
T=${T:-/tmp/shm/tandem-final}; D=$1; mkdir -p $D
pids=()
up() { # name tp port env...
  env "${@:4}" $T up --preset llama-160m --mode unified --tp $2 --grpc-addr 127.0.0.1:$3 --http-addr 127.0.0.1:$(($3+1)) > $D/up-$1.log 2>&1 &
  pids+=($!)
}
trap 'kill ${pids[@]} 2>/dev/null; wait' EXIT
up tp1 1 19190
up tp2 2 19290
up tp2tcp 2 19390 NCCL_SHM_DISABLE=1
for p in 19191 19291 19391; do
  for i in $(seq 600); do curl -sf http://127.0.0.1:$p/readyz >/dev/null && break; sleep 0.5; done
  curl -sf http://127.0.0.1:$p/readyz >/dev/null || { echo "not ready: $p"; exit 1; }
done
for r in 1 2 3 4 5; do
  for dep in tp1:19190 tp2:19290 tp2tcp:19390; do
    name=${dep%:*}; port=${dep#*:}
    echo "# round $r $name $(date -u +%H:%M:%S) $(cat /proc/loadavg)"
    for cn in 1:6 8:24 32:64; do
      c=${cn%:*}; n=${cn#*:}
      flock /tmp/tandem-bench.lock $T bench --addr 127.0.0.1:$port --num-prompts $n --random-input-len 128 --random-output-len 32 --max-concurrency $c \
        --seed $r --num-warmups 2 --disable-tqdm --save-result --result-dir $D --result-filename $name-r$r-c$c.json > /dev/null 2>&1 || echo "failed: $name r$r c$c"
    done
  done
done
