//go:build !amd64

package cpu

// archKernels: there are no assembly kernels for this architecture.
func archKernels() []*kernels { return nil }
