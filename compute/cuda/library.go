package cuda

import (
	"fmt"
	"os"
	"strings"

	"github.com/ebitengine/purego"
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
	h, path, err := openFirst(libDriver, DriverCandidates(getenv, root))
	if err != nil {
		return nil, err
	}
	if err := bindAll(h, ls.drv.symbols()); err != nil {
		return nil, fmt.Errorf("%w: CUDA driver %s is too old or not a driver: %w", ErrNoCUDA, path, err)
	}
	ls.drvPath = path
	if h, path, err = openFirst(libCublas, CublasCandidates(getenv, root)); err != nil {
		return nil, err
	}
	if err := bindAll(h, ls.blas.symbols()); err != nil {
		return nil, fmt.Errorf("%w: cuBLAS %s: %w", ErrNoCUDA, path, err)
	}
	bindOptional(h, ls.blas.optional())
	ls.blasPath = path
	if h, path, err = openFirst(libNVRTC, NVRTCCandidates(getenv, root)); err != nil {
		return nil, err
	}
	if err := bindAll(h, ls.rtc.symbols()); err != nil {
		return nil, fmt.Errorf("%w: NVRTC %s: %w", ErrNoCUDA, path, err)
	}
	bindOptional(h, ls.rtc.optional())
	ls.rtPath = path
	return ls, nil
}

func bindOptional(h uintptr, syms []symbol) {
	for _, s := range syms {
		if p, err := purego.Dlsym(h, s.name); err == nil && p != 0 {
			purego.RegisterFunc(s.fn, p)
		}
	}
}

// openFirst dlopens the first candidate that works, or says what it tried.
func openFirst(l lib, cands []Candidate) (uintptr, string, error) {
	var tried []string
	for _, c := range cands {
		if !c.Found {
			tried = append(tried, fmt.Sprintf("%s (%s): not found", c.Path, c.Source))
			continue
		}
		// RTLD_GLOBAL so that a library opened from a wheel directory
		// satisfies the others' dependencies on it by soname.
		h, err := purego.Dlopen(c.Path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s (%s): %v", c.Path, c.Source, err))
			continue
		}
		return h, c.Path, nil
	}
	return 0, "", fmt.Errorf("%w: %s; tried:\n  %s", ErrNoCUDA, notFound(l), strings.Join(tried, "\n  "))
}

// notFound is the first line of the error for a library not found.
func notFound(l lib) string {
	if l.env == EnvDriver {
		return fmt.Sprintf("no CUDA driver was found (%s; is this a machine with an NVIDIA GPU and its driver? set %s to the driver's path)", l.sonames[0], l.env)
	}
	return fmt.Sprintf("%s was not found (%s; pip install nvidia-%s-cu12, or set %s to its path)",
		l.what, strings.Join(l.sonames, ", "), pipName(l), l.env)
}

func pipName(l lib) string {
	if l.env == EnvNVRTC {
		return "cuda-nvrtc"
	}
	return "cublas"
}
