#!/bin/bash
# tandem bench against two deployments of llama-160m f32 (TP 1), up at
# once and measured in turn each round: OLD, a build of e07bad2 (the
# previous stop), and NEW, a build of eb4cae6 (this session: the
# transposed path's prefetch, the VDPBF16PS kernels, F16 transposed);
# five rounds of ../cpu-2026-12-07/final8/serve.sh.
# usage: OLD=BIN NEW=BIN M=DIR serve.sh OUTDIR
ROUNDS=5 exec "$(dirname "$0")/../cpu-2026-12-07/final8/serve.sh" "$@"
