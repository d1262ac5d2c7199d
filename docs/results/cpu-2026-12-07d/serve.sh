#!/bin/bash
# tandem bench against two deployments of llama-160m f32 (TP 1), up at
# once and measured in turn each round: OLD, a build of 165f3bd (the
# previous stop), and NEW, a build of 4e53e56 (this session: decode
# batches of 2-8 rows by bands of weight rows); five rounds of
# ../cpu-2026-12-07/final8/serve.sh. usage: OLD=BIN NEW=BIN M=DIR serve.sh OUTDIR
ROUNDS=5 exec "$(dirname "$0")/../cpu-2026-12-07/final8/serve.sh" "$@"
