// Package dynlib finds, opens and binds the shared libraries that
// nccl/nvidia and compute/cuda load at run time with
// github.com/ebitengine/purego (so the binary builds with CGO_ENABLED=0).
//
// It holds only what those searches share: the pieces a candidate list
// is built from (File, Loader, Glob, PipDirs, Multiarch, CUDAHomes, and
// LibDirs for $TANDEM_CUDA_LIB_DIR), every path taken under a root that
// is "/" in production and a fake tree in tests; the CUDA driver's whole
// search (DriverCandidates), since both packages open the driver; Open,
// which dlopens the first candidate found and otherwise names every
// candidate with its reason; and Bind and CString for the bound
// functions. Which other sonames to look for, and which places apply to
// which library, stay with the callers. The package keeps no state;
// package dynlibtest builds the fake trees for tests. It imports no
// Tandem package.
package dynlib
