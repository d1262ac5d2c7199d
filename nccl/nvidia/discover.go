package nvidia

import (
	"path/filepath"

	"github.com/tandemllm/tandem/internal/dynlib"
)

// EnvLibrary names the environment variable that overrides the search.
const EnvLibrary = "TANDEM_NCCL_LIBRARY"

// soname is what the dynamic loader is asked for; NCCL 2.x keeps ABI
// compatibility under this name.
const soname = "libnccl.so.2"

// Candidate is one place Load looks for libnccl. Its Source is "option",
// "env", "libdir", "loader", "pip", "conda", "cuda" or "system".
type Candidate = dynlib.Candidate

// Candidates lists where libnccl is looked for, in order, given the
// environment getenv and the file system under root ("/" in production;
// tests point it at a fake tree). It opens nothing: Load does.
func Candidates(getenv func(string) string, root string) []Candidate {
	if p := getenv(EnvLibrary); p != "" {
		return []Candidate{dynlib.File(root, p, "env")}
	}
	// cu12 wheels use nvidia/nccl/lib; the CUDA 13 wheels may group
	// their libraries under nvidia/cu13/lib instead.
	pip := dynlib.PipDirs(getenv, "nvidia/nccl/lib", "nvidia/cu13/lib")
	out := append(dynlib.LibDirs(getenv, root, soname), dynlib.Loader(soname)...)
	out = append(out, dynlib.Glob(root, "pip", pip, soname)...)
	if c := getenv("CONDA_PREFIX"); c != "" {
		out = append(out, dynlib.File(root, filepath.Join(c, "lib", soname), "conda"))
	}
	return append(out,
		dynlib.File(root, filepath.Join("/usr/local/cuda/lib64", soname), "cuda"),
		dynlib.File(root, filepath.Join("/usr/lib", dynlib.Multiarch(), soname), "system"),
	)
}
