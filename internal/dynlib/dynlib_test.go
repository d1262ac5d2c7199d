package dynlib_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ebitengine/purego"

	"github.com/tandemllm/tandem/internal/dynlib"
	"github.com/tandemllm/tandem/internal/dynlib/dynlibtest"
)

func TestCandidateSearch(t *testing.T) {
	ma := "/usr/lib/" + dynlib.Multiarch()
	tests := []struct {
		name          string
		files         []string
		search        func(root string) []dynlib.Candidate
		found, missed []string
	}{
		{
			name:  "file under root, found or not",
			files: []string{"/opt/libx.so.1"},
			search: func(root string) []dynlib.Candidate {
				return []dynlib.Candidate{dynlib.File(root, "/opt/libx.so.1", "env"), dynlib.File(root, "/opt/liby.so.1", "env")}
			},
			found:  []string{"env /opt/libx.so.1"},
			missed: []string{"env /opt/liby.so.1"},
		},
		{
			name: "root \"\" takes the path as given",
			search: func(root string) []dynlib.Candidate {
				return []dynlib.Candidate{dynlib.File("", root+"/x/../libx.so.1", "option"), dynlib.File("", "", "option")}
			},
			missed: []string{"option /x/../libx.so.1", "option "},
		},
		{
			name:   "loader: every soname, in order, found by definition",
			search: func(string) []dynlib.Candidate { return dynlib.Loader("libx.so.2", "libx.so.1") },
			found:  []string{"loader libx.so.2", "loader libx.so.1"},
		},
		{
			name:  "glob: by directory, then soname, matches sorted; a miss names every soname",
			files: []string{"/b/libx.so.1.2", "/a/p2/libx.so.1.2", "/a/p1/libx.so.1.2", "/a/p2/libx.so.2"},
			search: func(root string) []dynlib.Candidate {
				return dynlib.Glob(root, "cuda", []string{"/a/p*", "/c", "/b"}, "libx.so.2", "libx.so.1.2")
			},
			found:  []string{"cuda /a/p2/libx.so.2", "cuda /a/p1/libx.so.1.2", "cuda /a/p2/libx.so.1.2", "cuda /b/libx.so.1.2"},
			missed: []string{"cuda /c/libx.so.{2,1.2}"},
		},
		{
			name:  "glob: one soname misses under its own name",
			files: []string{ma + "/libx.so.1"},
			search: func(root string) []dynlib.Candidate {
				return dynlib.Glob(root, "system", []string{ma, "/usr/lib64"}, "libx.so.1")
			},
			found:  []string{"system " + ma + "/libx.so.1"},
			missed: []string{"system /usr/lib64/libx.so.1"},
		},
		{
			name: "pip: active environments, then the user's and the system's Pythons, each wheel directory",
			files: []string{
				"/usr/lib/python3/dist-packages/w/libx.so.1",
				"/home/u/.local/lib/python3.11/site-packages/w13/libx.so.1",
				"/home/u/.local/lib/python3.11/site-packages/w/libx.so.1",
				"/venv/lib/python3.12/site-packages/w/libx.so.1",
			},
			search: func(root string) []dynlib.Candidate {
				env := dynlibtest.Env(map[string]string{"VIRTUAL_ENV": "/venv", "HOME": "/home/u"})
				return dynlib.Glob(root, "pip", dynlib.PipDirs(env, "w", "w13"), "libx.so.1")
			},
			found: []string{
				"pip /venv/lib/python3.12/site-packages/w/libx.so.1",
				"pip /home/u/.local/lib/python3.11/site-packages/w/libx.so.1",
				"pip /home/u/.local/lib/python3.11/site-packages/w13/libx.so.1",
				"pip /usr/lib/python3/dist-packages/w/libx.so.1",
			},
		},
		{
			name:  "pip: images' virtual environments under /opt, which nothing activates",
			files: []string{"/opt/torch/.venv/lib/python3.12/site-packages/w/libx.so.1", "/opt/venv/lib/python3.11/site-packages/w/libx.so.1", "/opt/app/venv/lib/python3.10/dist-packages/w/libx.so.1"},
			search: func(root string) []dynlib.Candidate {
				return dynlib.Glob(root, "pip", dynlib.PipDirs(dynlibtest.Env(nil), "w"), "libx.so.1")
			},
			found: []string{
				"pip /opt/venv/lib/python3.11/site-packages/w/libx.so.1",
				"pip /opt/app/venv/lib/python3.10/dist-packages/w/libx.so.1",
				"pip /opt/torch/.venv/lib/python3.12/site-packages/w/libx.so.1",
			},
		},
		{
			name:  "libdir: each directory of TANDEM_CUDA_LIB_DIR in its order, empty entries ignored",
			files: []string{"/b/libx.so.1", "/a/libx.so.1"},
			search: func(root string) []dynlib.Candidate {
				return dynlib.LibDirs(dynlibtest.Env(map[string]string{dynlib.EnvLibDir: "/b::/c:/a"}), root, "libx.so.1")
			},
			found:  []string{"libdir /b/libx.so.1", "libdir /a/libx.so.1"},
			missed: []string{"libdir /c/libx.so.1"},
		},
		{
			name:   "libdir: unset, no candidates",
			files:  []string{"/a/libx.so.1"},
			search: func(root string) []dynlib.Candidate { return dynlib.LibDirs(dynlibtest.Env(nil), root, "libx.so.1") },
			missed: []string{},
		},
		{
			name: "driver: libdir, loader, the container's /usr/local/nvidia, compat, system; never a wheel or a stub",
			files: []string{
				"/drv/libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1", "/usr/local/nvidia/lib/libcuda.so.1",
				"/opt/cuda-13/compat/libcuda.so.1", "/usr/local/cuda/compat/libcuda.so.1", ma + "/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1",
				"/usr/local/cuda/lib64/stubs/libcuda.so.1", "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcuda.so.1",
			},
			search: func(root string) []dynlib.Candidate {
				return dynlib.DriverCandidates(dynlibtest.Env(map[string]string{dynlib.EnvLibDir: "/drv", "CUDA_HOME": "/opt/cuda-13", "CUDA_PATH": "/usr/local/cuda"}), root)
			},
			found: []string{
				"libdir /drv/libcuda.so.1", "loader libcuda.so.1",
				"nvidia /usr/local/nvidia/lib64/libcuda.so.1", "nvidia /usr/local/nvidia/lib/libcuda.so.1",
				"cuda /opt/cuda-13/compat/libcuda.so.1", "cuda /usr/local/cuda/compat/libcuda.so.1",
				"system " + ma + "/libcuda.so.1", "system /usr/lib/wsl/lib/libcuda.so.1",
			},
			missed: []string{"system /usr/lib64/libcuda.so.1"},
		},
		{
			name:  "driver: TANDEM_CUDA_LIBRARY is the only candidate",
			files: []string{"/usr/local/nvidia/lib64/libcuda.so.1"},
			search: func(root string) []dynlib.Candidate {
				return dynlib.DriverCandidates(dynlibtest.Env(map[string]string{dynlib.EnvDriver: "/x/libcuda.so.1", dynlib.EnvLibDir: "/usr/local/nvidia/lib64"}), root)
			},
			missed: []string{"env /x/libcuda.so.1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := dynlibtest.Tree(t, tc.files...)
			cs := tc.search(root)
			if got := dynlibtest.Found(root, cs); !slices.Equal(got, tc.found) {
				t.Errorf("found:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.found, "\n  "))
			}
			if got := dynlibtest.Missed(root, cs); tc.missed != nil && !slices.Equal(got, tc.missed) {
				t.Errorf("missed:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.missed, "\n  "))
			}
		})
	}
}

// libc is a library every Linux test machine has, opened by soname.
const libc = "libc.so.6"

func TestOpenLibrary(t *testing.T) {
	root := dynlibtest.Tree(t, "/bad/libx.so.1")
	absent, bad := dynlib.File(root, "/absent/libx.so.1", "env"), dynlib.File(root, "/bad/libx.so.1", "cuda")
	tests := []struct {
		name  string
		cands []dynlib.Candidate
		path  string   // opened, or "" for an error
		want  []string // the error's lines, as prefixes
	}{
		{
			name:  "every miss and failure named with its reason",
			cands: []dynlib.Candidate{absent, bad},
			want:  []string{"tried:", "  " + root + "/absent/libx.so.1 (env): not found", "  " + root + "/bad/libx.so.1 (cuda): " + root},
		},
		{
			name:  "the first that opens wins",
			cands: append([]dynlib.Candidate{absent, bad}, dynlib.Loader(libc, "libm.so.6")...),
			path:  libc,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, path, err := dynlib.Open(tc.cands, purego.RTLD_NOW|purego.RTLD_LOCAL)
			if tc.path != "" {
				if err != nil {
					t.Skipf("no %s here: %v", libc, err)
				}
				// A soname the loader found is reported as the file mapped.
				if !strings.HasPrefix(path, "/") || !strings.HasPrefix(filepath.Base(path), "libc.so") || h == 0 {
					t.Errorf("opened %q (handle %#x), want the file mapped for %q", path, h, tc.path)
				}
				return
			}
			if err == nil {
				t.Fatalf("opened %s", path)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("error has %d lines, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
				}
			}
		})
	}
}

func TestBindLibrary(t *testing.T) {
	h, err := purego.Dlopen(libc, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		t.Skipf("no %s here: %v", libc, err)
	}
	var a struct {
		strlen func(s *byte) uint
		getpid func() int32
		absent func()
	}
	err = dynlib.Bind(h, map[string]any{"strlen": &a.strlen, "dynlib_test_z": &a.absent, "dynlib_test_a": &a.getpid},
		map[string]any{"getpid": &a.getpid})
	if err == nil || err.Error() != "missing symbols dynlib_test_a, dynlib_test_z" || a.strlen != nil || a.getpid != nil {
		t.Fatalf("err = %v; want every missing symbol named, sorted, and nothing bound", err)
	}
	err = dynlib.Bind(h, map[string]any{"strlen": &a.strlen}, map[string]any{"getpid": &a.getpid, "dynlib_test_absent": &a.absent})
	if err != nil || a.getpid == nil || a.absent != nil {
		t.Fatalf("err = %v, getpid bound %t, absent bound %t; want only the missing optional left nil", err, a.getpid != nil, a.absent != nil)
	}
	if n := a.strlen(&[]byte("four\x00")[0]); n != 4 {
		t.Errorf("strlen = %d, want 4", n)
	}
}

func TestCString(t *testing.T) {
	for _, s := range []string{"", "a", "CUDA_ERROR_NO_DEVICE"} {
		if got := dynlib.CString(&append([]byte(s), 0, 'x')[0]); got != s {
			t.Errorf("CString(%q) = %q", s, got)
		}
	}
}

func TestMapped(t *testing.T) {
	if _, err := purego.Dlopen(libc, purego.RTLD_NOW|purego.RTLD_LOCAL); err != nil {
		t.Skipf("no %s here: %v", libc, err)
	}
	for _, tc := range []struct{ soname, wantBase string }{
		{libc, "libc.so"},          // mapped: a path whose name starts so
		{"libdynlibtest.so.1", ""}, // not mapped: unchanged
		{"notalibrary", ""},        // no .so: unchanged
	} {
		got := dynlib.Mapped(tc.soname)
		switch {
		case tc.wantBase == "" && got != tc.soname:
			t.Errorf("Mapped(%q) = %q, want it unchanged", tc.soname, got)
		case tc.wantBase != "" && (!strings.HasPrefix(got, "/") || !strings.HasPrefix(filepath.Base(got), tc.wantBase)):
			t.Errorf("Mapped(%q) = %q, want an absolute path to %s*", tc.soname, got, tc.wantBase)
		}
	}
}
