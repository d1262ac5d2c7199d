package dynlib

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Candidate is one place a library is looked for.
type Candidate struct {
	// Path is a file path, a bare soname for the dynamic loader's own
	// search, or a glob pattern that matched nothing (Found false).
	Path string
	// Source says where it came from, in the searching package's words:
	// "env", "loader", "pip", "cuda", "system" and so on.
	Source string
	// Found reports that Path exists (always true for the loader, which
	// does its own search).
	Found bool
}

// File is path under root as a candidate; root "" takes path as given.
func File(root, path, source string) Candidate {
	if root != "" {
		path = filepath.Join(root, path)
	}
	_, err := os.Stat(path)
	return Candidate{Path: path, Source: source, Found: err == nil}
}

// Loader lists sonames, in order, for the dynamic loader's own search
// (LD_LIBRARY_PATH, the ld.so cache, the default directories).
func Loader(sonames ...string) []Candidate {
	out := make([]Candidate, len(sonames))
	for i, s := range sonames {
		out[i] = Candidate{Path: s, Source: "loader", Found: true}
	}
	return out
}

// Glob expands each of dirs (which may hold glob patterns) under root for
// each soname, in soname order; Glob sorts its matches, so the order is
// stable from run to run. A directory where nothing matches gives one
// unfound candidate naming it and every soname
// ("dir/libcublas.so.{13,12,11}"), so the error says it was looked at.
func Glob(root, source string, dirs []string, sonames ...string) []Candidate {
	var out []Candidate
	for _, dir := range dirs {
		n := len(out)
		for _, s := range sonames {
			matches, _ := filepath.Glob(filepath.Join(root, dir, s)) // the only error is a bad pattern
			for _, m := range matches {
				out = append(out, Candidate{Path: m, Source: source, Found: true})
			}
		}
		if len(out) == n {
			out = append(out, Candidate{Path: filepath.Join(root, dir, soPattern(sonames)), Source: source})
		}
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

// PipDirs are the directories wheelDirs (e.g. "nvidia/cublas/lib") under
// the site-packages and dist-packages of every Python installation found
// without running Python, as glob patterns (python3*), active
// environments first ($VIRTUAL_ENV, $CONDA_PREFIX): that is the one the
// user means. Then come ~/.local, ~/.pyenv (when $HOME is set),
// /usr/local/lib, /usr/lib, /opt/conda/lib, and the virtual environments
// images keep under /opt (/opt/venv, /opt/*/venv, /opt/*/.venv, such as
// a GPU image's /opt/torch/.venv), which nothing activates for a
// process that is not Python.
func PipDirs(getenv func(string) string, wheelDirs ...string) []string {
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
	prefixes = append(prefixes, "/usr/local/lib", "/usr/lib", "/opt/conda/lib",
		"/opt/venv/lib", "/opt/*/venv/lib", "/opt/*/.venv/lib")
	var out []string
	for _, p := range prefixes {
		for _, pkgs := range []string{"site-packages", "dist-packages"} {
			for _, d := range wheelDirs {
				out = append(out, filepath.Join(p, "python3*", pkgs, d))
			}
		}
	}
	return out
}

// Multiarch is Debian's name for this architecture's system library
// directory under /usr/lib.
func Multiarch() string {
	if runtime.GOARCH == "arm64" {
		return "aarch64-linux-gnu"
	}
	return "x86_64-linux-gnu"
}

// Open dlopens the first found candidate that opens, with flags
// (purego.RTLD_*), and returns its handle and path: for a soname the
// dynamic loader found, the file it mapped (Mapped), so logs name the
// file. When none opens, the error lists every candidate after "tried:",
// one a line as "path (source): reason"; the caller wraps it with its
// sentinel and advice.
func Open(cands []Candidate, flags int) (uintptr, string, error) {
	var tried []string
	for _, c := range cands {
		if !c.Found {
			tried = append(tried, fmt.Sprintf("%s (%s): not found", c.Path, c.Source))
			continue
		}
		h, err := purego.Dlopen(c.Path, flags)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s (%s): %v", c.Path, c.Source, err))
			continue
		}
		if !strings.Contains(c.Path, "/") {
			return h, Mapped(c.Path), nil
		}
		return h, c.Path, nil
	}
	return 0, "", fmt.Errorf("tried:\n  %s", strings.Join(tried, "\n  "))
}

// Mapped is the file this process has mapped for soname (e.g.
// "libcuda.so.1" → "/usr/local/nvidia/lib64/libcuda.so.580.95.05"), read
// from /proc/self/maps: the first mapped file whose name starts with the
// soname's stem ("libcuda.so."). Where none is mapped, or the maps cannot
// be read, it returns soname unchanged.
func Mapped(soname string) string {
	i := strings.Index(soname, ".so")
	if i < 0 {
		return soname
	}
	stem := soname[:i+3]
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return soname
	}
	for line := range strings.Lines(string(maps)) {
		j := strings.IndexByte(line, '/')
		if j < 0 {
			continue
		}
		p := strings.TrimSpace(line[j:])
		if b := filepath.Base(p); b == stem || strings.HasPrefix(b, stem+".") {
			return p
		}
	}
	return soname
}

// Bind registers the symbols of h into the function variables they map to
// (pointers to func variables, as purego.RegisterFunc takes). Every
// required symbol is resolved before any is registered, so a library that
// lacks some binds nothing and fails with the sorted list of what is
// missing instead of a purego panic. A missing optional symbol leaves its
// variable nil.
func Bind(h uintptr, required, optional map[string]any) error {
	var missing []string
	addrs := make(map[string]uintptr, len(required))
	for name := range required {
		p, err := purego.Dlsym(h, name)
		if err != nil || p == 0 {
			missing = append(missing, name)
			continue
		}
		addrs[name] = p
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("missing symbols %s", strings.Join(missing, ", "))
	}
	for name, p := range addrs {
		purego.RegisterFunc(required[name], p)
	}
	for name, fn := range optional {
		if p, err := purego.Dlsym(h, name); err == nil && p != 0 {
			purego.RegisterFunc(fn, p)
		}
	}
	return nil
}

// CString copies a NUL-terminated C string that a library owns.
func CString(p *byte) string {
	var b []byte
	for q := p; *q != 0; q = (*byte)(unsafe.Add(unsafe.Pointer(q), 1)) {
		b = append(b, *q)
	}
	return string(b)
}
