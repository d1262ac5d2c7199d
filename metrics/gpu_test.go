package metrics

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestOpenGPU runs everywhere: without a GPU (no NVML library, or a
// CGO_ENABLED=0 build) OpenGPU must fail cleanly with ErrNoGPU; with one,
// device 0 must give plausible readings.
func TestOpenGPU(t *testing.T) {
	g, err := OpenGPU(0)
	if err != nil {
		if !errors.Is(err, ErrNoGPU) {
			t.Fatalf("OpenGPU(0) = %v, want an error wrapping ErrNoGPU", err)
		}
		if g != nil {
			t.Fatal("OpenGPU returned a GPU with its error")
		}
		t.Logf("no GPU here: %v", err)
		return
	}
	s, err := g.Sample()
	if err != nil {
		t.Logf("partial sample: %v", err) // some boards lack a query; the rest must be sane
	}
	t.Logf("GPU 0: %+v", s)
	if s.UtilizationPercent < 0 || s.UtilizationPercent > 100 || s.MemoryUsedBytes <= 0 || s.SMClockMHz <= 0 {
		t.Errorf("implausible sample %+v", s)
	}

	reg := prometheus.NewRegistry()
	w := NewWorker(reg, testWorkerLabels)
	if err := w.AttachGPU(g); err != nil {
		t.Fatal(err)
	}
	if err := w.AttachGPU(g); err == nil {
		t.Error("attaching the same GPU twice succeeded")
	}
	if n, err := testutil.GatherAndCount(reg, "tandem:gpu_memory_used_bytes", "tandem:gpu_sm_clock_mhz"); err != nil || n != 2 {
		t.Errorf("GPU gauges: %d series, %v", n, err)
	}

	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := g.Sample(); !errors.Is(err, ErrNoGPU) {
		t.Errorf("Sample after Close = %v, want ErrNoGPU", err)
	}
	// A closed GPU drops out of the scrape instead of failing it.
	if _, err := reg.Gather(); err != nil {
		t.Errorf("gather after Close: %v", err)
	}
}

func TestOpenGPUBadIndex(t *testing.T) {
	for _, tt := range []struct {
		index int
		noGPU bool
	}{
		{1 << 20, true}, // no machine has that many devices
		{-1, false},     // a caller bug, not an absent GPU (ErrNoGPU without cgo)
	} {
		g, err := OpenGPU(tt.index)
		if err == nil || g != nil {
			t.Fatalf("OpenGPU(%d) = %v, %v; want an error", tt.index, g, err)
		}
		if tt.noGPU && !errors.Is(err, ErrNoGPU) {
			t.Errorf("OpenGPU(%d) = %v, want ErrNoGPU", tt.index, err)
		}
	}
}

func TestAttachNilGPU(t *testing.T) {
	_, w := newWorker(t)
	if err := w.AttachGPU(nil); !errors.Is(err, ErrNoGPU) {
		t.Errorf("AttachGPU(nil) = %v, want ErrNoGPU", err)
	}
}

// TestGPUCollectorPartial: a query the device does not answer drops only
// its gauge; the others are served and the scrape does not fail.
func TestGPUCollectorPartial(t *testing.T) {
	reg := prometheus.NewRegistry()
	noPower := func() (GPUSample, gpuFields, error) {
		return GPUSample{UtilizationPercent: 87, MemoryUsedBytes: 40 << 30, PowerWatts: 0, SMClockMHz: 1980},
			fieldUtil | fieldMem | fieldClock, errors.New("power: not supported")
	}
	reg.MustRegister(newGPUCollector(testWorkerLabels, 0, noPower))
	want := `
# HELP tandem:gpu_memory_used_bytes GPU memory in use, by every process.
# TYPE tandem:gpu_memory_used_bytes gauge
tandem:gpu_memory_used_bytes{gpu="0",group="prefill-0",model_name="tiny",rank="1",role="prefill"} 4.294967296e+10
# HELP tandem:gpu_sm_clock_mhz Current SM clock of the GPU in MHz.
# TYPE tandem:gpu_sm_clock_mhz gauge
tandem:gpu_sm_clock_mhz{gpu="0",group="prefill-0",model_name="tiny",rank="1",role="prefill"} 1980
# HELP tandem:gpu_utilization_perc Percent of the last sample period during which a kernel ran on the GPU (0-100).
# TYPE tandem:gpu_utilization_perc gauge
tandem:gpu_utilization_perc{gpu="0",group="prefill-0",model_name="tiny",rank="1",role="prefill"} 87
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
