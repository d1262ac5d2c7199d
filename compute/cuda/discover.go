package cuda

import (
	"path/filepath"

	"github.com/tandemllm/tandem/internal/dynlib"
)

// Environment variables that override the search for one library. When
// one is set it is the only candidate for that library: an operator who
// names a file must get that file or an error, never another copy picked
// up silently. EnvLibDir names directories searched first for all three.
const (
	EnvDriver = dynlib.EnvDriver
	EnvCublas = "TANDEM_CUBLAS_LIBRARY"
	EnvNVRTC  = "TANDEM_NVRTC_LIBRARY"
	EnvLibDir = dynlib.EnvLibDir
)

// lib describes how to find cuBLAS or NVRTC; the driver's search is
// dynlib.DriverCandidates, shared with nccl/nvidia.
type lib struct {
	what    string   // "CUDA driver", "cuBLAS", "NVRTC"
	env     string   // override variable
	sonames []string // most preferred first
	pipDirs []string // under site-packages
}

// The sonames are those whose ABI this package binds: the driver keeps
// libcuda.so.1 forever; cuBLAS and NVRTC change soname with the major
// CUDA version, and 11.2 was NVRTC's first soname with a minor part. The
// CUDA 13 wheels put both under nvidia/cu13/lib.
var (
	libDriver = lib{what: "CUDA driver", env: EnvDriver, sonames: []string{dynlib.DriverSoname}}
	libCublas = lib{
		what: "cuBLAS", env: EnvCublas,
		sonames: []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11"},
		pipDirs: []string{"nvidia/cublas/lib", "nvidia/cu13/lib"},
	}
	libNVRTC = lib{
		what: "NVRTC", env: EnvNVRTC,
		sonames: []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"},
		pipDirs: []string{"nvidia/cuda_nvrtc/lib", "nvidia/cu13/lib"},
	}
)

// Candidate is one place a library is looked for. Its Source is "env",
// "loader", "pip", "cuda" or "system".
type Candidate = dynlib.Candidate

// DriverCandidates, CublasCandidates and NVRTCCandidates list where each
// library is looked for, in order, given the environment getenv and the
// file system under root ("/" in production; tests use a fake tree). They
// open nothing.
func DriverCandidates(getenv func(string) string, root string) []Candidate {
	return candidates(libDriver, getenv, root)
}

// CublasCandidates: see DriverCandidates.
func CublasCandidates(getenv func(string) string, root string) []Candidate {
	return candidates(libCublas, getenv, root)
}

// NVRTCCandidates: see DriverCandidates.
func NVRTCCandidates(getenv func(string) string, root string) []Candidate {
	return candidates(libNVRTC, getenv, root)
}

func candidates(l lib, getenv func(string) string, root string) []Candidate {
	if l.env == EnvDriver {
		return dynlib.DriverCandidates(getenv, root)
	}
	if p := getenv(l.env); p != "" {
		return []Candidate{dynlib.File(root, p, "env")}
	}
	out := append(dynlib.LibDirs(getenv, root, l.sonames...), dynlib.Loader(l.sonames...)...)
	out = append(out, dynlib.Glob(root, "pip", dynlib.PipDirs(getenv, l.pipDirs...), l.sonames...)...)
	out = append(out, dynlib.Glob(root, "cuda", dynlib.CUDAHomes(getenv, "lib64"), l.sonames...)...)
	sys := []string{filepath.Join("/usr/lib", dynlib.Multiarch()), "/usr/lib64"}
	return append(out, dynlib.Glob(root, "system", sys, l.sonames...)...)
}
