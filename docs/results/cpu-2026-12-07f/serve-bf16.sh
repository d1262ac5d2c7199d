#!/bin/bash
# tandem bench against two deployments of llama-160m bf16 (TP 1), up at
# once and measured in turn each round: OLD, a build of e07bad2 (the
# previous stop: BF16 widened in registers), and NEW, a build of f79e2c9
# (BF16 products on VDPBF16PS); five rounds of
# ../cpu-2026-12-07/final8/serve.sh on a BF16 copy of the preset.
# usage: OLD=BIN NEW=BIN M=DIR serve-bf16.sh OUTDIR (M made with
# `tandem model init --preset llama-160m --dtype bf16 --out M`)
ROUNDS=5 exec "$(dirname "$0")/../cpu-2026-12-07/final8/serve.sh" "$@"
