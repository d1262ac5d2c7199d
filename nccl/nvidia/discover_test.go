package nvidia

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/internal/dynlib"
	"github.com/tandemllm/tandem/internal/dynlib/dynlibtest"
	"github.com/tandemllm/tandem/nccl"
)

func TestCandidates(t *testing.T) {
	const lib = "nvidia/nccl/lib/libnccl.so.2"
	tests := []struct {
		name  string
		env   map[string]string
		files []string
		want  []string // found candidates, in order
	}{
		{
			name: "nothing installed: only the loader",
			want: []string{"loader libnccl.so.2"},
		},
		{
			name:  "env override is the only candidate",
			env:   map[string]string{EnvLibrary: "/opt/nccl/libnccl.so.2", "VIRTUAL_ENV": "/venv"},
			files: []string{"/opt/nccl/libnccl.so.2", "/venv/lib/python3.12/site-packages/" + lib},
			want:  []string{"env /opt/nccl/libnccl.so.2"},
		},
		{
			name: "active environments before user and system Python, then conda lib, cuda, system",
			env:  map[string]string{"VIRTUAL_ENV": "/venv", "CONDA_PREFIX": "/conda", "HOME": "/home/u"},
			files: []string{
				"/usr/lib/x86_64-linux-gnu/libnccl.so.2",
				"/usr/local/cuda/lib64/libnccl.so.2",
				"/conda/lib/libnccl.so.2",
				"/usr/lib/python3/dist-packages/" + lib,
				"/usr/local/lib/python3.10/dist-packages/" + lib,
				"/home/u/.local/lib/python3.11/site-packages/" + lib,
				"/home/u/.pyenv/versions/3.11.7/lib/python3.11/site-packages/" + lib,
				"/conda/lib/python3.12/site-packages/" + lib,
				"/venv/lib/python3.12/site-packages/" + lib,
			},
			want: []string{
				"loader libnccl.so.2",
				"pip /venv/lib/python3.12/site-packages/" + lib,
				"pip /conda/lib/python3.12/site-packages/" + lib,
				"pip /home/u/.local/lib/python3.11/site-packages/" + lib,
				"pip /home/u/.pyenv/versions/3.11.7/lib/python3.11/site-packages/" + lib,
				"pip /usr/local/lib/python3.10/dist-packages/" + lib,
				"pip /usr/lib/python3/dist-packages/" + lib,
				"conda /conda/lib/libnccl.so.2",
				"cuda /usr/local/cuda/lib64/libnccl.so.2",
				"system /usr/lib/" + dynlib.Multiarch() + "/libnccl.so.2",
			},
		},
		{
			name:  "cu13 wheel layout and several Pythons in a stable order",
			files: []string{"/usr/local/lib/python3.9/site-packages/nvidia/cu13/lib/libnccl.so.2", "/usr/local/lib/python3.12/site-packages/" + lib, "/usr/local/lib/python3.9/site-packages/" + lib},
			want: []string{
				"loader libnccl.so.2",
				"pip /usr/local/lib/python3.12/site-packages/" + lib,
				"pip /usr/local/lib/python3.9/site-packages/" + lib,
				"pip /usr/local/lib/python3.9/site-packages/nvidia/cu13/lib/libnccl.so.2",
			},
		},
		{
			// The lent GPU machines' image: nvidia-nccl-cu13 in a
			// virtual environment nothing activates for tandem.
			name:  "GPU image: the torch venv's wheel; TANDEM_CUDA_LIB_DIR before the loader",
			env:   map[string]string{dynlib.EnvLibDir: "/nccl"},
			files: []string{"/nccl/libnccl.so.2", "/opt/torch/.venv/lib/python3.12/site-packages/" + lib},
			want: []string{
				"libdir /nccl/libnccl.so.2",
				"loader libnccl.so.2",
				"pip /opt/torch/.venv/lib/python3.12/site-packages/" + lib,
			},
		},
		{
			name:  "HOME unset: no user directories searched",
			files: []string{"/home/u/.local/lib/python3.11/site-packages/" + lib},
			want:  []string{"loader libnccl.so.2"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := dynlibtest.Tree(t, tc.files...)
			got := dynlibtest.Found(root, Candidates(dynlibtest.Env(tc.env), root))
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("found:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// Unfound candidates stay in the list so the error can name them.
func TestCandidatesKeepMisses(t *testing.T) {
	root := dynlibtest.Tree(t)
	misses := dynlibtest.Missed(root, Candidates(dynlibtest.Env(map[string]string{"HOME": "/home/u"}), root))
	for _, want := range []string{
		"pip /home/u/.local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
		"pip /usr/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2",
		"cuda /usr/local/cuda/lib64/libnccl.so.2",
	} {
		if !slices.Contains(misses, want) {
			t.Errorf("misses lack %s", want)
		}
	}
}

func TestLoadErrorsNamePathsTried(t *testing.T) {
	root := dynlibtest.Tree(t, "/usr/local/cuda/lib64/libnccl.so.2") // exists, but is not a library
	tests := []struct {
		name string
		opts LoadOptions
		want []string // substrings of the error
		not  []string
	}{
		{
			name: "override that does not exist",
			opts: LoadOptions{Root: root, Getenv: dynlibtest.Env(map[string]string{EnvLibrary: "/nope/libnccl.so.2"})},
			want: []string{root + "/nope/libnccl.so.2 (env): not found", EnvLibrary},
			not:  []string{"(loader)"},
		},
		{
			name: "explicit path",
			opts: LoadOptions{Path: filepath.Join(root, "absent.so")},
			want: []string{root + "/absent.so (option): not found"},
		},
		{
			name: "search: every place named, dlopen's reason for a bad file",
			opts: LoadOptions{Root: root, Getenv: dynlibtest.Env(map[string]string{"HOME": "/home/u"})},
			want: []string{
				root + "/usr/local/cuda/lib64/libnccl.so.2 (cuda): ",
				root + "/usr/lib/" + dynlib.Multiarch() + "/libnccl.so.2 (system): not found",
				root + "/home/u/.local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2 (pip): not found",
			},
			not: []string{"(cuda): not found"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Load(tc.opts)
			if err == nil {
				if tc.opts.Root != "" && l != nil && !strings.HasPrefix(l.Path(), root) {
					t.Skipf("a real NCCL is installed here (%s); the loader found it first", l.Path())
				}
				t.Fatal("Load succeeded on a tree without NCCL")
			}
			dynlibtest.ErrorHas(t, err, nccl.ErrUnavailable, tc.want, tc.not)
		})
	}
}

// On this machine (no NCCL) the real search fails clearly; on one with
// NCCL it succeeds and the test says so.
func TestLoadHere(t *testing.T) {
	t.Setenv(EnvLibrary, "")
	l, err := Load(LoadOptions{})
	if err == nil {
		t.Skipf("NCCL %s found at %s", VersionString(l.Version()), l.Path())
	}
	if !errors.Is(err, nccl.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "CUDA driver") {
		t.Skipf("NCCL found, CUDA driver not: %v", err)
	}
	dynlibtest.ErrorHas(t, err, nccl.ErrUnavailable, []string{
		"libnccl.so.2 (loader): ",
		"/usr/local/cuda/lib64/libnccl.so.2 (cuda)",
		"/usr/lib/" + dynlib.Multiarch() + "/libnccl.so.2 (system)",
		"/usr/local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2 (pip)",
		"set " + EnvLibrary,
	}, nil)
	t.Logf("as a user sees it:\n%v", err)
}
