// Package cuda implements compute.Backend on one NVIDIA GPU. The CUDA
// driver, cuBLAS and NVRTC are loaded at run time with
// github.com/ebitengine/purego: the binary builds with `go build` alone
// (CGO_ENABLED=0, no toolkit headers, which is why gorgonia.org/cu cannot
// serve), and only a machine that asks for --device cuda or auto ever
// opens them. The bound functions live in structs filled at run time
// (driver, cublas, nvrtc), never in package state.
//
// # Finding the libraries
//
// DriverCandidates, CublasCandidates and NVRTCCandidates list the search,
// a pure function of the environment and the file system; New opens the
// first candidate of each that works, and Libraries says which files it
// opened (the tandem command logs them when the backend starts). Where
// one cannot be found or opened, or the driver sees no GPU, the error
// wraps ErrNoCUDA and names every candidate with the reason it failed
// ("no CUDA driver was found ..."; the driver is looked for first, since
// without it the others do not matter). For each library, in order:
//
//  1. $TANDEM_CUDA_LIBRARY, $TANDEM_CUBLAS_LIBRARY or $TANDEM_NVRTC_LIBRARY:
//     when set, the only candidate for that library.
//  2. The directories of $TANDEM_CUDA_LIB_DIR (':'-separated), in order.
//  3. The dynamic loader's own search for each soname: libcuda.so.1;
//     libcublas.so.13, .12, .11; libnvrtc.so.13, .12, .11.2.
//  4. The driver only: /usr/local/nvidia/lib64 and /usr/local/nvidia/lib,
//     where GPU containers mount the host's driver.
//  5. cuBLAS and NVRTC only: pip wheels (nvidia-cublas-cu12,
//     nvidia-cuda-nvrtc-cu12, and the CUDA 13 wheels' nvidia/cu13/lib)
//     under site-packages and dist-packages of $VIRTUAL_ENV, $CONDA_PREFIX,
//     ~/.local, ~/.pyenv, /usr/local/lib, /usr/lib, /opt/conda and the
//     virtual environments of images under /opt (/opt/venv, /opt/*/venv,
//     /opt/*/.venv).
//  6. $CUDA_HOME, $CUDA_PATH and /usr/local/cuda: lib64 for cuBLAS and
//     NVRTC, compat/ for the driver (never lib64/stubs, whose libcuda
//     only fails).
//  7. /usr/lib/<multiarch>, /usr/lib64, and for the driver WSL's
//     /usr/lib/wsl/lib.
//
// # Kernels
//
// The kernels are CUDA C++ in kernels/*.cu, embedded with go:embed and
// joined into one program (common.cu's helpers first). NVRTC compiles it
// at start-up for the GPU's compute capability (cuDeviceGetAttribute):
// a CUBIN for sm_XY when this NVRTC knows the architecture, else PTX for
// the newest one it knows below it, JIT-compiled by the driver. The code
// needs no header at all: bf16 is converted with bit operations, f16 with
// the PTX cvt instructions.
//
// Compiled modules are cached in DefaultCacheDir() (the user cache
// directory's tandem/cuda; Options.CacheDir overrides it, "off" disables
// it) under sha256(source, options, NVRTC version) plus the target, e.g.
// 3f...c1-sm_90.cubin, written atomically. A cached module the driver
// refuses is compiled again once.
//
// Every kernel is named in a launch table (kernelTable) with its
// parameter types; launches are checked against it, arguments are packed
// into the kernelParams layout cuLaunchKernel reads (argPack), and a test
// checks the table against the `extern "C" __global__ void NAME(`
// declarations of the sources.
//
// Ops: embedding gather (f32/bf16/f16 tables), row gather (logits rows),
// bias and residual add, RMSNorm, RMSNorm fused with the residual add
// (AddRMSNorm), LayerNorm, RoPE (rotate-half), SiLU·mul, tanh GELU, KV
// write into paged blocks, KV pack/unpack for KVRead/KVLoad, paged decode
// attention (split-K across the context when the batch alone would not
// fill the GPU, merged by attn_combine), tiled flash-style prefill
// attention (16 query rows per block, 32-key tiles in shared memory, online
// softmax), and sampling (ArgMax, Sample: temperature by inverse CDF with
// the host's uniforms). MatMul is cublasGemmEx with CUBLAS_COMPUTE_32F:
// 16-bit weights multiply activations narrowed to the same type, with fp32
// accumulation; F32 weights stay fp32 unless Options.TF32.
//
// The KV cache is F32 or BF16 (KVSpec.DType; AutoKVDType is BF16): the KV
// write, pack/unpack and both attention kernels are templates over the
// cache's element type with an extern "C" form for each (*_bf16 for BF16,
// next to the F32 one in the launch table). BF16 keys and values are
// rounded to nearest even when written and widened when read; scores,
// softmax and accumulators stay fp32.
//
// # Streams and errors
//
// Ops are enqueued on one stream and return at once; their small host
// arguments go through a pinned staging arena in stream order. Read,
// Write, LoadMat and the sampling methods wait for the stream. KVRead and
// KVLoad use a second stream and their own buffers so that KV transfer
// can run on another goroutine while the group steps. Each call makes the
// primary context current on its (locked) OS thread. The interface's ops
// return no error: the first failure is kept (Err), later ops do nothing,
// and Read panics with it. Capture records ops into a CUDA graph; Time
// measures ops with events.
//
// # What has been verified, and what needs a GPU
//
// Verified on a machine without a GPU or driver (go test ./compute/cuda):
// discovery over fake file trees (order, overrides, misses kept), the
// ErrNoCUDA errors naming every candidate (New on such a machine fails
// cleanly, without a panic), that dlopen failures are reported, the
// launch table against the sources (names and parameter types), the
// kernelParams packing, the GEMM row-major/column-major mapping, the
// compile target choice, the module cache key and files, and the
// attention plan (decode/prefill, split counts), and that each BF16 KV
// kernel sits right after its F32 twin with the same parameters. `tandem ... --device
// cuda` fails there with the clear error; --device auto runs on the CPU.
//
// Not verified here, and written to be checked on a GPU: that NVRTC
// compiles the sources (the BF16 KV templates included), that the purego signatures match the libraries at
// run time, and the numbers. gpu_test.go compares every op with
// compute/cpu on random inputs (tolerances stated there: 1e-5 relative
// for elementwise ops, 1e-4 for norms, attention and F32 GEMMs, 2e-2·√K
// and 3e-3·√K for BF16 and F16 GEMMs) and the tiny preset's greedy tokens
// with the CPU's; those tests skip only when New returns ErrNoCUDA.
// Performance (GEMM and attention throughput against the GPU's limits)
// is not measured yet.
package cuda
