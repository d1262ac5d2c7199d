package dynlib

import (
	"path/filepath"
	"slices"
)

// The CUDA driver is the one library both compute/cuda and nccl/nvidia
// open, so its search lives here, with what every CUDA library search
// shares: the operator's directory list and the toolkit's directories.
const (
	// EnvDriver names the CUDA driver file to open. When set it is the
	// only candidate: an operator who names a file gets that file or an
	// error, never another driver picked up silently.
	EnvDriver = "TANDEM_CUDA_LIBRARY"
	// EnvLibDir is a list of directories, separated by ':', searched
	// before anything else (the dynamic loader included) for every CUDA
	// library: the driver, cuBLAS, NVRTC and NCCL.
	EnvLibDir = "TANDEM_CUDA_LIB_DIR"
	// DriverSoname is the CUDA driver's soname, unchanged since CUDA 1.
	DriverSoname = "libcuda.so.1"
)

// LibDirs are the candidates for sonames in $TANDEM_CUDA_LIB_DIR (source
// "libdir"), in the order the variable lists them; none when it is unset.
func LibDirs(getenv func(string) string, root string, sonames ...string) []Candidate {
	v := getenv(EnvLibDir)
	if v == "" {
		return nil
	}
	dirs := slices.DeleteFunc(filepath.SplitList(v), func(d string) bool { return d == "" })
	return Glob(root, "libdir", dirs, sonames...)
}

// CUDAHomes are sub (e.g. "lib64") under $CUDA_HOME, $CUDA_PATH and
// /usr/local/cuda, in that order and without repeats.
func CUDAHomes(getenv func(string) string, sub string) []string {
	var out []string
	for _, h := range []string{getenv("CUDA_HOME"), getenv("CUDA_PATH"), "/usr/local/cuda"} {
		if d := filepath.Join(h, sub); h != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// DriverCandidates lists where the CUDA driver is looked for, in order:
// $TANDEM_CUDA_LIBRARY alone when set; else $TANDEM_CUDA_LIB_DIR; the
// dynamic loader; /usr/local/nvidia/lib64 and lib, where GPU containers
// mount the host's driver ("nvidia"); compat/ of the CUDA installations,
// the forward-compatibility driver of datacenter installs ("cuda"; never
// lib64/stubs, whose libcuda only fails); the multiarch system
// directory, /usr/lib64 and WSL2's /usr/lib/wsl/lib ("system"). The
// driver ships with the kernel module, never in a Python wheel.
func DriverCandidates(getenv func(string) string, root string) []Candidate {
	if p := getenv(EnvDriver); p != "" {
		return []Candidate{File(root, p, "env")}
	}
	out := append(LibDirs(getenv, root, DriverSoname), Loader(DriverSoname)...)
	out = append(out, Glob(root, "nvidia", []string{"/usr/local/nvidia/lib64", "/usr/local/nvidia/lib"}, DriverSoname)...)
	out = append(out, Glob(root, "cuda", CUDAHomes(getenv, "compat"), DriverSoname)...)
	sys := []string{filepath.Join("/usr/lib", Multiarch()), "/usr/lib64", "/usr/lib/wsl/lib"}
	return append(out, Glob(root, "system", sys, DriverSoname)...)
}
