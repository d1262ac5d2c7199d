package nvidia

import (
	"os"
	"path/filepath"
	"runtime"
)

// EnvLibrary names the environment variable that overrides the search.
const EnvLibrary = "TANDEM_NCCL_LIBRARY"

// soname is what the dynamic loader is asked for; NCCL 2.x keeps ABI
// compatibility under this name.
const soname = "libnccl.so.2"

// Candidate is one place Load looks for libnccl.
type Candidate struct {
	// Path is a file path, or the bare soname for the dynamic loader's
	// search, or a glob pattern that matched nothing (Found false).
	Path string
	// Source says where the candidate came from: "env", "loader", "pip",
	// "conda", "cuda" or "system".
	Source string
	// Found reports that Path exists (always true for the loader, which
	// does its own search).
	Found bool
}

// Candidates lists where libnccl is looked for, in order, given the
// environment getenv and the file system under root ("/" in production;
// tests point it at a fake tree). It opens nothing: Load does.
func Candidates(getenv func(string) string, root string) []Candidate {
	if p := getenv(EnvLibrary); p != "" {
		return []Candidate{fileCandidate(root, p, "env")}
	}
	out := []Candidate{{Path: soname, Source: "loader", Found: true}}
	for _, pattern := range pipPatterns(getenv) {
		out = append(out, globCandidates(root, pattern, "pip")...)
	}
	if c := getenv("CONDA_PREFIX"); c != "" {
		out = append(out, fileCandidate(root, filepath.Join(c, "lib", soname), "conda"))
	}
	out = append(out,
		fileCandidate(root, filepath.Join("/usr/local/cuda/lib64", soname), "cuda"),
		fileCandidate(root, filepath.Join("/usr/lib", multiarch(), soname), "system"),
	)
	return out
}

// pipPatterns are the site-packages directories of the Python
// installations we can find without running Python, most specific first:
// an activated environment is what the user means to use.
func pipPatterns(getenv func(string) string) []string {
	var prefixes []string // directories holding python3.X/
	if v := getenv("VIRTUAL_ENV"); v != "" {
		prefixes = append(prefixes, filepath.Join(v, "lib"))
	}
	if c := getenv("CONDA_PREFIX"); c != "" {
		prefixes = append(prefixes, filepath.Join(c, "lib"))
	}
	if h := getenv("HOME"); h != "" {
		prefixes = append(prefixes,
			filepath.Join(h, ".local/lib"),
			filepath.Join(h, ".pyenv/versions/*/lib"))
	}
	prefixes = append(prefixes, "/usr/local/lib", "/usr/lib", "/opt/conda/lib")
	var out []string
	for _, p := range prefixes {
		for _, pkgs := range []string{"site-packages", "dist-packages"} {
			// cu12 wheels use nvidia/nccl/lib; the CUDA 13 wheels may
			// group their libraries under nvidia/cu13/lib instead.
			for _, lib := range []string{"nvidia/nccl/lib", "nvidia/cu13/lib"} {
				out = append(out, filepath.Join(p, "python3*", pkgs, lib, soname))
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

// globCandidates expands pattern under root. A pattern that matches
// nothing is kept, unfound, so the error can say it was looked at.
func globCandidates(root, pattern, source string) []Candidate {
	p := filepath.Join(root, pattern)
	matches, _ := filepath.Glob(p) // the only error is a bad pattern, and ours are fixed
	if len(matches) == 0 {
		return []Candidate{{Path: p, Source: source}}
	}
	// Glob sorts its matches, so the order is stable from run to run;
	// which of two installed wheels wins matters less than that it is
	// always the same one.
	out := make([]Candidate, 0, len(matches))
	for _, m := range matches {
		out = append(out, Candidate{Path: m, Source: source, Found: true})
	}
	return out
}
