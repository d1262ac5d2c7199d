package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// moduleKey names a compiled module: a hash of everything that changes the
// code NVRTC produces (the source, the options, NVRTC's version) and the
// target architecture in clear, so the cache directory can be read by eye
// and one binary's modules for several GPUs sit side by side.
func moduleKey(src string, opts []string, nvrtcVersion string, target string) string {
	h := sha256.New()
	h.Write([]byte(src))
	h.Write([]byte{0})
	h.Write([]byte(strings.Join(opts, "\x00")))
	h.Write([]byte{0})
	h.Write([]byte(nvrtcVersion))
	return hex.EncodeToString(h.Sum(nil))[:32] + "-" + target
}

// targetName turns an NVRTC architecture option into the file suffix:
// "--gpu-architecture=sm_90" gives "sm_90.cubin", compute_90 "compute_90.ptx".
func targetName(archOpt string, cubin bool) string {
	t := strings.TrimPrefix(archOpt, "--gpu-architecture=")
	if cubin {
		return t + ".cubin"
	}
	return t + ".ptx"
}

// DefaultCacheDir is where compiled kernels are kept: the user cache
// directory's tandem/cuda ($XDG_CACHE_HOME or ~/.cache on Linux), or the
// temporary directory when there is no home.
func DefaultCacheDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "tandem", "cuda")
}

// moduleCache reads and writes compiled modules under dir. An empty dir
// disables it.
type moduleCache struct{ dir string }

func (c moduleCache) path(key string) string { return filepath.Join(c.dir, key) }

// load returns the cached module, or nil when there is none (or the cache
// is off). A file that cannot be read is treated as absent: the module is
// compiled again and rewritten.
func (c moduleCache) load(key string) []byte {
	if c.dir == "" {
		return nil
	}
	b, err := os.ReadFile(c.path(key))
	if err != nil || len(b) == 0 {
		return nil
	}
	return b
}

// store writes a module atomically (a temporary file renamed into place),
// so a process killed mid-write or two workers starting together never
// leave a torn module for the next start to load.
func (c moduleCache) store(key string, code []byte) error {
	if c.dir == "" {
		return nil
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return fmt.Errorf("cuda: kernel cache: %w", err)
	}
	f, err := os.CreateTemp(c.dir, key+".tmp*")
	if err != nil {
		return fmt.Errorf("cuda: kernel cache: %w", err)
	}
	_, werr := f.Write(code)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		os.Remove(f.Name())
		return fmt.Errorf("cuda: kernel cache: writing %s: %w", f.Name(), firstErr(werr, cerr))
	}
	if err := os.Rename(f.Name(), c.path(key)); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("cuda: kernel cache: %w", err)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
