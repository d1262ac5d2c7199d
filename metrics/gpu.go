package metrics

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrNoGPU is wrapped by the errors of OpenGPU (and of a closed GPU's
// Sample) when there is no GPU to read: the NVML library or driver is
// missing, the index names no device, or the binary was built without cgo.
// A worker without a GPU branches on it and exports no GPU gauges.
var ErrNoGPU = errors.New("metrics: no GPU")

// GPUSample is one reading of a GPU's counters.
type GPUSample struct {
	// UtilizationPercent is the percent of the last sample period (1/6 s
	// to 1 s, by device) during which a kernel ran, 0-100.
	UtilizationPercent float32
	// MemoryUsedBytes is the device memory in use, by every process.
	MemoryUsedBytes int64
	// PowerWatts is the board's power draw.
	PowerWatts float32
	// SMClockMHz is the current streaming-multiprocessor clock.
	SMClockMHz int32
}

// gpuFields says which fields of a GPUSample were read: a device may not
// support every query (power on some boards, utilization under MIG).
type gpuFields uint8

const (
	fieldUtil gpuFields = 1 << iota
	fieldMem
	fieldPower
	fieldClock
)

// Sample reads the GPU's counters now. A query the device does not answer
// leaves its field zero and adds to the returned error (errors.Join of
// one error per failed query); the other fields are still valid.
func (g *GPU) Sample() (GPUSample, error) {
	s, _, err := g.read()
	return s, err
}

// AttachGPU registers the tandem:gpu_* gauges of g on the worker's
// registry, labelled like the worker's metrics plus gpu (the device
// index). They are read from NVML at each scrape, so an idle worker costs
// nothing. A query that fails at a scrape omits its gauge from that scrape
// rather than failing the scrape.
func (m *Worker) AttachGPU(g *GPU) error {
	if g == nil {
		return fmt.Errorf("%w: attach GPU: nil", ErrNoGPU)
	}
	if err := m.reg.Register(newGPUCollector(m.labels, g.Index(), g.read)); err != nil {
		return fmt.Errorf("metrics: attach GPU %d: %w", g.Index(), err)
	}
	return nil
}

type gpuCollector struct {
	read                    func() (GPUSample, gpuFields, error)
	util, mem, power, clock *prometheus.Desc
}

func newGPUCollector(labels WorkerLabels, index int, read func() (GPUSample, gpuFields, error)) *gpuCollector {
	cl := labels.constLabels()
	cl["gpu"] = strconv.Itoa(index)
	desc := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, cl) }
	return &gpuCollector{
		read:  read,
		util:  desc("tandem:gpu_utilization_perc", "Percent of the last sample period during which a kernel ran on the GPU (0-100)."),
		mem:   desc("tandem:gpu_memory_used_bytes", "GPU memory in use, by every process."),
		power: desc("tandem:gpu_power_watts", "GPU board power draw."),
		clock: desc("tandem:gpu_sm_clock_mhz", "Current SM clock of the GPU in MHz."),
	}
}

func (c *gpuCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.util
	ch <- c.mem
	ch <- c.power
	ch <- c.clock
}

func (c *gpuCollector) Collect(ch chan<- prometheus.Metric) {
	s, ok, _ := c.read()
	emit := func(f gpuFields, d *prometheus.Desc, v float64) {
		if ok&f != 0 {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
		}
	}
	emit(fieldUtil, c.util, float64(s.UtilizationPercent))
	emit(fieldMem, c.mem, float64(s.MemoryUsedBytes))
	emit(fieldPower, c.power, float64(s.PowerWatts))
	emit(fieldClock, c.clock, float64(s.SMClockMHz))
}
