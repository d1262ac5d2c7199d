#!/bin/bash
# tandem bench against two deployments of llama-160m (TP 1), up at once
# and measured in turn each round: OLD, a build of 2e6bf5a (the previous
# stop), and NEW, a build of 8cfa321 (this session: the pool's guided
# shares, BF16 decode batches on the pairs kernels at any row length, BF16
# prefill attention on VDPBF16PS); five rounds of
# ../cpu-2026-12-07/final8/serve.sh. M is the F32 preset or a BF16 copy
# (`tandem model init --preset llama-160m --dtype bf16 --out M`).
# usage: OLD=BIN NEW=BIN M=DIR serve.sh OUTDIR
ROUNDS=5 exec "$(dirname "$0")/../cpu-2026-12-07/final8/serve.sh" "$@"
