// Package nvidia implements nccl.Communicator with NVIDIA's NCCL, loaded
// at run time with github.com/ebitengine/purego: the binary builds with
// `go build` alone, needs no CUDA toolkit, and only a node that has a GPU
// and libnccl ever opens it.
//
// It provides:
//
//   - Load, which finds and opens libnccl and the CUDA driver (libcuda.so.1)
//     and returns a *Library: the loaded library is a value the caller
//     passes around, never package state;
//   - UniqueID, the 128-byte ncclUniqueId, with a text encoding so that
//     rank 0 can publish it through etcd;
//   - Library.NewComm, which joins a group and returns a *Comm that
//     implements nccl.Communicator for device buffers (nccl.Device);
//   - Error, the typed error carrying an ncclResult_t and NCCL's own text,
//     and CUDAError for the few driver calls this package makes.
//
// # Finding the library
//
// Candidates returns the search, a pure function of the environment and
// the file system, in this order; Load opens the first that works and,
// when none does, returns an error wrapping nccl.ErrUnavailable that names
// every path tried and why each failed:
//
//  1. $TANDEM_NCCL_LIBRARY, a file path. When set, it is the only
//     candidate: an operator who names a library must get that one or an
//     error, never a different NCCL picked up silently.
//  2. The directories of $TANDEM_CUDA_LIB_DIR (':'-separated), in order.
//  3. libnccl.so.2 through the dynamic loader's own search
//     (LD_LIBRARY_PATH, the ld.so cache, the default directories).
//  4. The pip wheels nvidia-nccl-cu12 / nvidia-nccl-cu13:
//     site-packages/nvidia/nccl/lib/libnccl.so.2 (and nvidia/cu13/lib) in
//     the active environments first ($VIRTUAL_ENV, $CONDA_PREFIX), then
//     ~/.local/lib/python3*, ~/.pyenv/versions/*/lib/python3*,
//     /usr/local/lib/python3*, /usr/lib/python3*, /opt/conda and the
//     virtual environments of images under /opt (/opt/venv, /opt/*/venv,
//     /opt/*/.venv, such as a GPU image's /opt/torch/.venv), each with
//     site-packages and Debian's dist-packages.
//  5. $CONDA_PREFIX/lib/libnccl.so.2 (conda's nccl package).
//  6. /usr/local/cuda/lib64/libnccl.so.2 and the multiarch system directory
//     (/usr/lib/x86_64-linux-gnu or /usr/lib/aarch64-linux-gnu).
//
// The CUDA driver (libcuda.so.1) is found by the search compute/cuda uses
// too, internal/dynlib's DriverCandidates: $TANDEM_CUDA_LIBRARY alone when
// set, else $TANDEM_CUDA_LIB_DIR, the dynamic loader, /usr/local/nvidia
// (where GPU containers mount the host's driver), the CUDA installations'
// compat/ and the system directories; never a Python wheel, since the
// driver is installed with the kernel module. LoadOptions.CUDADriver
// overrides it. Library.Path and Library.DriverPath say which files were
// opened.
//
// # Streams and waiting
//
// NCCL collectives only enqueue work on a CUDA stream. Every Comm call
// enqueues and then waits for the stream by polling cuStreamQuery, checking
// ncclCommGetAsyncError and ctx between polls, so a dead peer or an expired
// deadline aborts the communicator (ncclCommAbort) and returns instead of
// hanging in cuStreamSynchronize. Communicators are created non-blocking
// (ncclCommInitRankConfig, NCCL ≥ 2.14) so that joining a group honours ctx
// too; older libraries fall back to the blocking ncclCommInitRank.
//
// # Imports
//
// This package imports only the standard library, purego, tandem/nccl
// and internal/dynlib (the library search it shares with compute/cuda).
// It must never import compute/cuda, engine, worker or any other Tandem
// package: the engine picks a Communicator, not the other way round. The
// handful of driver calls here (context, stream query, and in tests
// memory) stay minimal on purpose; compute/cuda owns the full driver
// binding.
package nvidia
