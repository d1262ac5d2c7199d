//go:build !cgo

package metrics

import "fmt"

// GPU reads one device's counters through NVML. This build has no cgo,
// which NVML's bindings need, so there is never a GPU to open.
type GPU struct {
	index int
}

// OpenGPU always fails with an error wrapping ErrNoGPU: the binary was
// built with CGO_ENABLED=0.
func OpenGPU(index int) (*GPU, error) {
	return nil, fmt.Errorf("%w: open GPU %d: built without cgo", ErrNoGPU, index)
}

// Index is the device index the GPU was opened with.
func (g *GPU) Index() int { return g.index }

// Close does nothing.
func (g *GPU) Close() error { return nil }

func (g *GPU) read() (GPUSample, gpuFields, error) {
	return GPUSample{}, 0, fmt.Errorf("%w: GPU %d: built without cgo", ErrNoGPU, g.index)
}
