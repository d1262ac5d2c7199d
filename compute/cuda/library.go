package cuda

import (
	"fmt"
	"os"
	"strings"

	"github.com/ebitengine/purego"

	"github.com/tandemllm/tandem/internal/dynlib"
)

// libraries are the three loaded libraries. They are never unloaded:
// cuBLAS and the driver keep threads running inside themselves.
type libraries struct {
	drv                       *driver
	blas                      *cublas
	rtc                       *nvrtc
	drvPath, blasPath, rtPath string
}

// loadLibraries finds, opens and binds the driver, cuBLAS and NVRTC, in
// that order, so that a machine without a driver hears about the driver
// (the cause) rather than about cuBLAS. Every failure to find or open one
// wraps ErrNoCUDA and names every candidate tried and why it failed.
func loadLibraries(getenv func(string) string, root string) (*libraries, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if root == "" {
		root = "/"
	}
	ls := &libraries{drv: &driver{}, blas: &cublas{}, rtc: &nvrtc{}}
	var err error
	if ls.drvPath, err = load(libDriver, getenv, root, ls.drv.symbols(), nil); err != nil {
		return nil, err
	}
	if ls.blasPath, err = load(libCublas, getenv, root, ls.blas.symbols(), ls.blas.optional()); err != nil {
		return nil, err
	}
	if ls.rtPath, err = load(libNVRTC, getenv, root, ls.rtc.symbols(), ls.rtc.optional()); err != nil {
		return nil, err
	}
	return ls, nil
}

// load opens the first candidate for l that works, binds its symbols and
// returns its path.
func load(l lib, getenv func(string) string, root string, required, optional map[string]any) (string, error) {
	// RTLD_GLOBAL so that a library opened from a wheel directory
	// satisfies the others' dependencies on it by soname.
	h, path, err := dynlib.Open(candidates(l, getenv, root), purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return "", fmt.Errorf("%w: %s; %v", ErrNoCUDA, notFound(l), err)
	}
	if err := dynlib.Bind(h, required, optional); err != nil {
		if l.env == EnvDriver {
			return "", fmt.Errorf("%w: CUDA driver %s is too old or not a driver: %w", ErrNoCUDA, path, err)
		}
		return "", fmt.Errorf("%w: %s %s: %w", ErrNoCUDA, l.what, path, err)
	}
	return path, nil
}

// notFound is the first line of the error for a library not found.
func notFound(l lib) string {
	if l.env == EnvDriver {
		return fmt.Sprintf("no CUDA driver was found (%s; is this a machine with an NVIDIA GPU and its driver? set %s to the driver's path, or %s to its directory)", l.sonames[0], l.env, EnvLibDir)
	}
	return fmt.Sprintf("%s was not found (%s; pip install nvidia-%s-cu12, or set %s to its path, or %s to its directory)",
		l.what, strings.Join(l.sonames, ", "), pipName(l), l.env, EnvLibDir)
}

func pipName(l lib) string {
	if l.env == EnvNVRTC {
		return "cuda-nvrtc"
	}
	return "cublas"
}
