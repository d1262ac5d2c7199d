//go:build cgo

package metrics

import (
	"errors"
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// GPU reads one device's counters through NVML. libnvidia-ml.so.1 is
// opened at run time (dlopen), so a binary built with cgo runs, without
// GPU gauges, on a machine that has no NVIDIA driver.
type GPU struct {
	index int
	mu    sync.RWMutex
	dev   nvml.Device // nil once closed
}

// OpenGPU initialises NVML and opens the device at index (NVML's
// enumeration order, which CUDA_VISIBLE_DEVICES does not change). Its
// error wraps ErrNoGPU when the library, the driver or the device is
// absent. It never panics and logs nothing. Close releases NVML.
func OpenGPU(index int) (*GPU, error) {
	if index < 0 {
		return nil, fmt.Errorf("metrics: open GPU %d: negative index", index)
	}
	if ret := nvml.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND || ret == nvml.ERROR_DRIVER_NOT_LOADED {
			return nil, fmt.Errorf("%w: open GPU %d: nvml init: %w", ErrNoGPU, index, ret)
		}
		return nil, fmt.Errorf("metrics: open GPU %d: nvml init: %w", index, ret)
	}
	dev, err := device(index)
	if err != nil {
		nvml.Shutdown() // balance Init; the open error is the one that matters
		return nil, err
	}
	return &GPU{index: index, dev: dev}, nil
}

func device(index int) (nvml.Device, error) {
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("metrics: open GPU %d: device count: %w", index, ret)
	}
	if index >= n {
		return nil, fmt.Errorf("%w: open GPU %d: NVML sees %d devices", ErrNoGPU, index, n)
	}
	dev, ret := nvml.DeviceGetHandleByIndex(index)
	switch ret {
	case nvml.SUCCESS:
		return dev, nil
	case nvml.ERROR_NOT_FOUND, nvml.ERROR_GPU_IS_LOST, nvml.ERROR_INVALID_ARGUMENT:
		return nil, fmt.Errorf("%w: open GPU %d: %w", ErrNoGPU, index, ret)
	}
	return nil, fmt.Errorf("metrics: open GPU %d: %w", index, ret)
}

// Index is the device index the GPU was opened with.
func (g *GPU) Index() int { return g.index }

// Close releases NVML; Sample fails with ErrNoGPU afterwards. Closing
// twice is a no-op.
func (g *GPU) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dev == nil {
		return nil
	}
	g.dev = nil
	if ret := nvml.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("metrics: close GPU %d: nvml shutdown: %w", g.index, ret)
	}
	return nil
}

func (g *GPU) read() (GPUSample, gpuFields, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	var s GPUSample
	if g.dev == nil {
		return s, 0, fmt.Errorf("%w: GPU %d is closed", ErrNoGPU, g.index)
	}
	var ok gpuFields
	var errs []error
	fail := func(what string, ret nvml.Return) {
		errs = append(errs, fmt.Errorf("metrics: GPU %d %s: %w", g.index, what, ret))
	}
	if u, ret := g.dev.GetUtilizationRates(); ret == nvml.SUCCESS {
		s.UtilizationPercent, ok = float32(u.Gpu), ok|fieldUtil
	} else {
		fail("utilization", ret)
	}
	if mem, ret := g.dev.GetMemoryInfo(); ret == nvml.SUCCESS {
		s.MemoryUsedBytes, ok = int64(mem.Used), ok|fieldMem
	} else {
		fail("memory", ret)
	}
	if mw, ret := g.dev.GetPowerUsage(); ret == nvml.SUCCESS {
		s.PowerWatts, ok = float32(mw)/1000, ok|fieldPower // NVML reports milliwatts
	} else {
		fail("power", ret)
	}
	if mhz, ret := g.dev.GetClockInfo(nvml.CLOCK_SM); ret == nvml.SUCCESS {
		s.SMClockMHz, ok = int32(mhz), ok|fieldClock
	} else {
		fail("SM clock", ret)
	}
	return s, ok, errors.Join(errs...)
}
