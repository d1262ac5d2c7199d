#!/bin/bash
# tandem bench against two deployments of llama-160m bf16 (TP 1), up at
# once and measured in turn each round: --kernels amx and --kernels
# avx512. 5 rounds at concurrency 1, 8, 32 (6, 24, 64 prompts of 128
# tokens, 32 out), as ../../cpu-2026-12-06/serve.sh did for f32.
# T: tandem built at the commit measured. usage: serve.sh OUTDIR
T=${T:-/tmp/amx/tandem}; D=$1; mkdir -p "$D"
M=${M:-/tmp/amx/llama-160m-bf16}
[ -d "$M" ] || $T model init --preset llama-160m --dtype bf16 --out "$M" || exit 1
pids=()
up() { # name kernels port
  $T up --model "$M" --mode unified --tp 1 --kernels $2 --grpc-addr 127.0.0.1:$3 --http-addr 127.0.0.1:$(($3+1)) > "$D/up-$1.log" 2>&1 &
  pids+=($!)
}
trap 'kill ${pids[@]} 2>/dev/null; wait' EXIT
up amx amx 19490
up avx512 avx512 19590
for p in 19491 19591; do
  for i in $(seq 600); do curl -sf http://127.0.0.1:$p/readyz >/dev/null && break; sleep 0.5; done
  curl -sf http://127.0.0.1:$p/readyz >/dev/null || { echo "not ready: $p"; exit 1; }
done
for r in 1 2 3 4 5; do
  for dep in amx:19490 avx512:19590; do
    name=${dep%:*}; port=${dep#*:}
    echo "# round $r $name $(date -u +%H:%M:%S) $(cat /proc/loadavg)"
    for cn in 1:6 8:24 32:64; do
      c=${cn%:*}; n=${cn#*:}
      flock /tmp/tandem-bench.lock $T bench --addr 127.0.0.1:$port --num-prompts $n --random-input-len 128 --random-output-len 32 --max-concurrency $c --tokenizer "$M" \
        --seed $r --num-warmups 2 --disable-tqdm --save-result --result-dir "$D" --result-filename $name-r$r-c$c.json > /dev/null 2>&1 || echo "failed: $name r$r c$c"
    done
  done
done
