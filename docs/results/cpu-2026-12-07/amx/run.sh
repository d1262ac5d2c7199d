#!/bin/sh
# The AMX kernel set against AVX-512 on the same binaries, five rounds,
# the two sets alternated within each round: BF16 prefill (engine),
# BF16 GEMMs of prefill shapes (compute/cpu) and BF16 decode at batch 1,
# 8 and 32. Build first, from the repository root:
#   go test -c -o /tmp/amx/engine.test ./engine
#   go test -c -o /tmp/amx/cpu.test ./compute/cpu
# usage (from the repository root): run.sh OUTDIR [WHAT]
# WHAT: any of prefill gemm decode (default all three).
out=$1
what=${2:-prefill gemm decode}
mkdir -p "$out"
bench() { # name kernels dir binary pattern benchtime
	f=$out/$1-$2.txt
	echo "# start $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
	(cd "$3" && flock /tmp/tandem-bench.lock /tmp/amx/$4 -test.run '^$' \
		-test.bench "$5" -test.benchtime "$6" -kernels "$2") >>"$f" 2>&1
	echo "# end $(date -u +%T) $(cat /proc/loadavg)" >>"$f"
}
for i in 1 2 3 4 5; do
	for k in amx avx512; do
		case $what in *prefill*) bench prefill $k engine engine.test 'BenchmarkPrefill/.*/bf16/' 3x ;; esac
		case $what in *gemm*) bench gemm $k compute/cpu cpu.test 'BenchmarkGEMM/BF16/m512/' 10x ;; esac
		case $what in *decode*) bench decode $k engine engine.test 'BenchmarkDecode/llama-160m/bf16/batch-(1|8|32)/threads-2$' 20x ;; esac
	done
done
