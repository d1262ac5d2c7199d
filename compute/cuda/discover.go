package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Environment variables that override the search for one library. When
// one is set it is the only candidate for that library: an operator who
// names a file must get that file or an error, never another copy picked
// up silently.
const (
	EnvDriver = "TANDEM_CUDA_LIBRARY"
	EnvCublas = "TANDEM_CUBLAS_LIBRARY"
	EnvNVRTC  = "TANDEM_NVRTC_LIBRARY"
)

// lib describes how to find one of the three libraries.
type lib struct {
	what    string   // "CUDA driver", "cuBLAS", "NVRTC"
	env     string   // override variable
	sonames []string // most preferred first
	pipDirs []string // under site-packages; none for the driver
	cudaDir string   // directory under a CUDA installation
}

// The sonames are those whose ABI this package binds: the driver keeps
// libcuda.so.1 forever; cuBLAS and NVRTC change soname with the major
// CUDA version, and 11.2 was NVRTC's first soname with a minor part.
var (
	libDriver = lib{
		what: "CUDA driver", env: EnvDriver,
		sonames: []string{"libcuda.so.1"},
		// The driver ships with the kernel module, never in a wheel;
		// the toolkit's lib64 holds only a stub, but compat/ holds the
		// forward-compatibility driver of datacenter installs.
		cudaDir: "compat",
	}
	libCublas = lib{
		what: "cuBLAS", env: EnvCublas,
		sonames: []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11"},
		pipDirs: []string{"nvidia/cublas/lib", "nvidia/cu13/lib"},
		cudaDir: "lib64",
	}
	libNVRTC = lib{
		what: "NVRTC", env: EnvNVRTC,
		sonames: []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"},
		pipDirs: []string{"nvidia/cuda_nvrtc/lib", "nvidia/cu13/lib"},
		cudaDir: "lib64",
	}
)

// Candidate is one place a library is looked for.
type Candidate struct {
	// Path is a file path, a bare soname for the dynamic loader's own
	// search, or a glob pattern that matched nothing (Found false).
	Path string
	// Source says where it came from: "env", "loader", "pip", "cuda" or
	// "system".
	Source string
	// Found reports that Path exists (always true for the loader).
	Found bool
}

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
	if p := getenv(l.env); p != "" {
		return []Candidate{fileCandidate(root, p, "env")}
	}
	var out []Candidate
	for _, s := range l.sonames {
		out = append(out, Candidate{Path: s, Source: "loader", Found: true})
	}
	for _, dir := range pipDirs(l, getenv) {
		out = append(out, dirCandidates(root, dir, l.sonames, "pip")...)
	}
	var cudaHomes []string
	for _, v := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if h := getenv(v); h != "" && h != "/usr/local/cuda" {
			cudaHomes = append(cudaHomes, h)
		}
	}
	cudaHomes = append(cudaHomes, "/usr/local/cuda")
	for _, h := range cudaHomes {
		out = append(out, dirCandidates(root, filepath.Join(h, l.cudaDir), l.sonames, "cuda")...)
	}
	sys := []string{filepath.Join("/usr/lib", multiarch()), "/usr/lib64"}
	if l.env == EnvDriver {
		sys = append(sys, "/usr/lib/wsl/lib") // WSL2 maps the Windows driver here
	}
	for _, d := range sys {
		out = append(out, dirCandidates(root, d, l.sonames, "system")...)
	}
	return out
}

// pipDirs are the wheel library directories under every Python
// installation we can find without running Python, active environments
// first: that is the one the user means.
func pipDirs(l lib, getenv func(string) string) []string {
	if len(l.pipDirs) == 0 {
		return nil
	}
	var prefixes []string // directories holding python3.X/
	if v := getenv("VIRTUAL_ENV"); v != "" {
		prefixes = append(prefixes, filepath.Join(v, "lib"))
	}
	if c := getenv("CONDA_PREFIX"); c != "" {
		prefixes = append(prefixes, filepath.Join(c, "lib"))
	}
	if h := getenv("HOME"); h != "" {
		prefixes = append(prefixes, filepath.Join(h, ".local/lib"), filepath.Join(h, ".pyenv/versions/*/lib"))
	}
	prefixes = append(prefixes, "/usr/local/lib", "/usr/lib", "/opt/conda/lib")
	var out []string
	for _, p := range prefixes {
		for _, pkgs := range []string{"site-packages", "dist-packages"} {
			for _, d := range l.pipDirs {
				out = append(out, filepath.Join(p, "python3*", pkgs, d))
			}
		}
	}
	return out
}

func multiarch() string {
	if runtime.GOARCH == "arm64" {
		return "aarch64-linux-gnu"
	}
	return "x86_64-linux-gnu"
}

func fileCandidate(root, path, source string) Candidate {
	p := filepath.Join(root, path)
	_, err := os.Stat(p)
	return Candidate{Path: p, Source: source, Found: err == nil}
}

// dirCandidates expands dir (which may hold a glob) under root for each
// soname, in soname order. When nothing matches, one unfound candidate
// names the directory and every soname, so the error says it was looked at.
func dirCandidates(root, dir string, sonames []string, source string) []Candidate {
	var out []Candidate
	for _, s := range sonames {
		// Glob sorts its matches, so the order is stable from run to run.
		matches, _ := filepath.Glob(filepath.Join(root, dir, s)) // the only error is a bad pattern; ours are fixed
		for _, m := range matches {
			out = append(out, Candidate{Path: m, Source: source, Found: true})
		}
	}
	if len(out) == 0 {
		return []Candidate{{Path: filepath.Join(root, dir, soPattern(sonames)), Source: source}}
	}
	return out
}

// soPattern renders sonames as one name: "libcublas.so.{13,12,11}".
func soPattern(sonames []string) string {
	if len(sonames) == 1 {
		return sonames[0]
	}
	stem := sonames[0][:strings.Index(sonames[0], ".so.")+4]
	vers := make([]string, len(sonames))
	for i, s := range sonames {
		vers[i] = strings.TrimPrefix(s, stem)
	}
	return fmt.Sprintf("%s{%s}", stem, strings.Join(vers, ","))
}
