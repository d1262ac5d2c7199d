package cuda

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/internal/dynlib"
	"github.com/tandemllm/tandem/internal/dynlib/dynlibtest"
)

func TestCandidates(t *testing.T) {
	ma := dynlib.Multiarch()
	tests := []struct {
		name  string
		cands func(func(string) string, string) []Candidate
		env   map[string]string
		files []string
		want  []string
	}{
		{
			name:  "driver: nothing installed, only the loader",
			cands: DriverCandidates,
			want:  []string{"loader libcuda.so.1"},
		},
		{
			name:  "driver: env override is the only candidate",
			cands: DriverCandidates,
			env:   map[string]string{EnvDriver: "/opt/drv/libcuda.so.1"},
			files: []string{"/opt/drv/libcuda.so.1", "/usr/lib/" + ma + "/libcuda.so.1"},
			want:  []string{"env /opt/drv/libcuda.so.1"},
		},
		{
			name:  "driver: compat, system and WSL, never a wheel or the toolkit's stub",
			cands: DriverCandidates,
			env:   map[string]string{"VIRTUAL_ENV": "/venv"},
			files: []string{
				"/usr/local/cuda/compat/libcuda.so.1", "/usr/lib/" + ma + "/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1",
				"/usr/local/cuda/lib64/stubs/libcuda.so.1", "/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcuda.so.1",
			},
			want: []string{
				"loader libcuda.so.1",
				"cuda /usr/local/cuda/compat/libcuda.so.1",
				"system /usr/lib/" + ma + "/libcuda.so.1",
				"system /usr/lib/wsl/lib/libcuda.so.1",
			},
		},
		{
			name:  "cublas: loader sonames newest first, pip (active env first), CUDA_HOME, /usr/local/cuda, system",
			cands: CublasCandidates,
			env:   map[string]string{"VIRTUAL_ENV": "/venv", "HOME": "/home/u", "CUDA_HOME": "/opt/cuda-12.4"},
			files: []string{
				"/usr/lib/" + ma + "/libcublas.so.12",
				"/usr/local/cuda/lib64/libcublas.so.12",
				"/opt/cuda-12.4/lib64/libcublas.so.12",
				"/home/u/.local/lib/python3.11/site-packages/nvidia/cublas/lib/libcublas.so.12",
				"/venv/lib/python3.12/site-packages/nvidia/cublas/lib/libcublas.so.12",
				"/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13",
			},
			want: []string{
				"loader libcublas.so.13", "loader libcublas.so.12", "loader libcublas.so.11",
				"pip /venv/lib/python3.12/site-packages/nvidia/cublas/lib/libcublas.so.12",
				"pip /venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13",
				"pip /home/u/.local/lib/python3.11/site-packages/nvidia/cublas/lib/libcublas.so.12",
				"cuda /opt/cuda-12.4/lib64/libcublas.so.12",
				"cuda /usr/local/cuda/lib64/libcublas.so.12",
				"system /usr/lib/" + ma + "/libcublas.so.12",
			},
		},
		{
			name:  "nvrtc: wheel and 11.2 soname",
			cands: NVRTCCandidates,
			files: []string{
				"/usr/local/lib/python3.10/dist-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
				"/usr/local/cuda/lib64/libnvrtc.so.11.2",
			},
			want: []string{
				"loader libnvrtc.so.13", "loader libnvrtc.so.12", "loader libnvrtc.so.11.2",
				"pip /usr/local/lib/python3.10/dist-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
				"cuda /usr/local/cuda/lib64/libnvrtc.so.11.2",
			},
		},
		{
			// The lent GPU machines' image: the driver mounted under
			// /usr/local/nvidia, the CUDA 13 wheels in a virtual
			// environment that nothing activates for tandem.
			name: "GPU image: driver under /usr/local/nvidia, cuBLAS from the torch venv's cu13 wheel",
			cands: func(getenv func(string) string, root string) []Candidate {
				return append(DriverCandidates(getenv, root), CublasCandidates(getenv, root)...)
			},
			env: map[string]string{"HOME": "/root"},
			files: []string{
				"/usr/local/nvidia/lib64/libcuda.so.1",
				"/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13",
				"/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublasLt.so.13",
			},
			want: []string{
				"loader libcuda.so.1", "nvidia /usr/local/nvidia/lib64/libcuda.so.1",
				"loader libcublas.so.13", "loader libcublas.so.12", "loader libcublas.so.11",
				"pip /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13",
			},
		},
		{
			name:  "GPU image: NVRTC from the cu13 wheel; TANDEM_CUDA_LIB_DIR searched before the loader",
			cands: NVRTCCandidates,
			env:   map[string]string{EnvLibDir: "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib"},
			files: []string{"/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13"},
			want: []string{
				"libdir /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13",
				"loader libnvrtc.so.13", "loader libnvrtc.so.12", "loader libnvrtc.so.11.2",
				"pip /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13",
			},
		},
		{
			name:  "nvrtc: env override",
			cands: NVRTCCandidates,
			env:   map[string]string{EnvNVRTC: "/x/libnvrtc.so.12"},
			files: []string{"/x/libnvrtc.so.12"},
			want:  []string{"env /x/libnvrtc.so.12"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := dynlibtest.Tree(t, tc.files...)
			got := dynlibtest.Found(root, tc.cands(dynlibtest.Env(tc.env), root))
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("found:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// Misses stay in the list, one per directory with every soname, so the
// error can say where it looked.
func TestCandidatesKeepMisses(t *testing.T) {
	root := dynlibtest.Tree(t)
	misses := dynlibtest.Missed(root, CublasCandidates(dynlibtest.Env(map[string]string{"HOME": "/home/u"}), root))
	for _, want := range []string{
		"pip /home/u/.local/lib/python3*/site-packages/nvidia/cublas/lib/libcublas.so.{13,12,11}",
		"cuda /usr/local/cuda/lib64/libcublas.so.{13,12,11}",
		"system /usr/lib/" + dynlib.Multiarch() + "/libcublas.so.{13,12,11}",
	} {
		if !slices.Contains(misses, want) {
			t.Errorf("misses lack %s:\n  %s", want, strings.Join(misses, "\n  "))
		}
	}
}

func TestLoadLibrariesErrors(t *testing.T) {
	root := dynlibtest.Tree(t, "/usr/local/cuda/compat/libcuda.so.1") // exists but is no library
	tests := []struct {
		name string
		env  map[string]string
		want []string
		not  []string
	}{
		{
			name: "override that does not exist",
			env:  map[string]string{EnvDriver: "/nope/libcuda.so.1"},
			want: []string{"no CUDA driver was found", root + "/nope/libcuda.so.1 (env): not found", EnvDriver},
			not:  []string{"(loader)"},
		},
		{
			name: "search: every place named, dlopen's reason for a bad file",
			want: []string{
				"no CUDA driver was found",
				"libcuda.so.1 (loader): ",
				root + "/usr/local/cuda/compat/libcuda.so.1 (cuda): ",
				root + "/usr/lib/" + dynlib.Multiarch() + "/libcuda.so.1 (system): not found",
			},
			not: []string{"(cuda): not found", "cuBLAS"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ls, err := loadLibraries(dynlibtest.Env(tc.env), root)
			if err == nil {
				if strings.HasPrefix(ls.drvPath, root) || tc.env[EnvDriver] != "" {
					t.Fatal("loadLibraries succeeded on a fake tree")
				}
				t.Skipf("a real CUDA driver is installed here (%s)", ls.drvPath)
			}
			dynlibtest.ErrorHas(t, err, ErrNoCUDA, tc.want, tc.not)
		})
	}
}

// On this machine (no driver) New fails with ErrNoCUDA and names what it
// looked for; on a GPU machine it works and the test says so.
func TestNewWithoutCUDA(t *testing.T) {
	t.Setenv(EnvDriver, "")
	b, err := New(Options{CacheDir: "off"})
	if err == nil {
		defer b.Close()
		t.Skipf("CUDA works here: %s", b.Name())
	}
	if !errors.Is(err, ErrNoCUDA) {
		t.Fatalf("err = %v, want ErrNoCUDA", err)
	}
	if strings.Contains(err.Error(), "cuBLAS") || strings.Contains(err.Error(), "NVRTC") {
		t.Skipf("a driver is here, another library is not: %v", err)
	}
	dynlibtest.ErrorHas(t, err, ErrNoCUDA, []string{
		"no CUDA driver was found",
		"libcuda.so.1 (loader): ",
		"/usr/lib/" + dynlib.Multiarch() + "/libcuda.so.1 (system)",
		"/usr/local/cuda/compat/libcuda.so.1 (cuda)",
		"set " + EnvDriver,
	}, nil)
	t.Logf("as a user sees it:\n%v", err)
}
