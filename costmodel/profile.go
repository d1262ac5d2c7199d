package costmodel

import (
	"embed"
	"errors"
	"fmt"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/tandemllm/tandem/netshape"
)

// Errors callers branch on.
var (
	// ErrUnknownHardware is wrapped when a hardware profile name is not known.
	ErrUnknownHardware = errors.New("unknown hardware profile")
	// ErrUnknownLink is wrapped when a link profile name is not known.
	ErrUnknownLink = errors.New("unknown link profile")
	// ErrDoesNotFit is wrapped when a model shard does not fit a device.
	ErrDoesNotFit = errors.New("does not fit")
)

// Device kinds.
const (
	KindGPU = "gpu"
	KindCPU = "cpu"
)

// Link classes: the first three pick NCCL's per-hop costs, tcp Tandem's
// TCP ring.
const (
	ClassNVLink = "nvlink"
	ClassPCI    = "pci"
	ClassNet    = "net"
	ClassTCP    = "tcp"
)

// Hardware is one accelerator, or for a CPU one machine whose cores all
// its ranks share. Units are bytes, bytes per second, FLOP/s and seconds.
type Hardware struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Kind        string `json:"kind"`
	// MemoryBytes is the device memory; MemoryBandwidth its peak read rate.
	MemoryBytes     float64 `json:"memory_bytes"`
	MemoryBandwidth float64 `json:"memory_bandwidth"`
	// PeakFLOPS is dense peak compute in the dtype weights are multiplied in.
	PeakFLOPS float64 `json:"peak_flops"`
	// TilePeakFLOPS is, on a CPU profile, the peak of BF16 matrix products
	// on the CPU's matrix unit (Intel AMX tiles), where compute/cpu's amx
	// kernel set multiplies BF16 weights; 0 where the CPU has none. With
	// Efficiency.TileCompute it prices 2-byte (BF16) weights' products in
	// place of PeakFLOPS and Compute.
	TilePeakFLOPS float64 `json:"tile_peak_flops,omitempty"`
	// GPUsPerNode is the devices of one node (1 for a CPU machine).
	GPUsPerNode int `json:"gpus_per_node"`
	// Shared: every rank on a node shares the one device (CPU processes
	// sharing cores), so busy ranks slow each other down.
	Shared bool `json:"shared,omitempty"`
	// SerialMemoryCompute: the device's kernels do not overlap streaming
	// a matrix from memory with the arithmetic on it (the CPU's tile
	// kernels: at decode batch sizes a step costs about the sum of its
	// memory and compute times, docs/benchmarking.md), so a product costs
	// the sum; otherwise the larger of the two (a GPU's roofline).
	SerialMemoryCompute bool `json:"serial_memory_compute,omitempty"`
	// Cores is, on a shared device, how many threads run at once (a CPU
	// machine's cores). MemoryBandwidth and PeakFLOPS are all of them
	// together: a rank computing with T threads while N threads are
	// runnable on the machine gets T·min(1, Cores/N)/Cores of its speed.
	Cores int `json:"cores,omitempty"`
	// IntraNodeLink joins the devices of a node; empty means the link
	// given to the planner (CPU ranks are processes joined by --link).
	IntraNodeLink string `json:"intra_node_link,omitempty"`
	// HostLink carries the logits from the device to the host sampler.
	HostLink string `json:"host_link,omitempty"`
	// NetworkBandwidth and NetworkLatency bound what one process pushes
	// through the kernel's TCP stack (CPU profiles).
	NetworkBandwidth float64 `json:"network_bandwidth,omitempty"`
	NetworkLatency   float64 `json:"network_latency,omitempty"`
	// SharedMemoryLatency is one barrier of nccl/ring's shared-memory
	// allreduce between processes that each have a core, and
	// SharedMemoryBandwidth the rate at which the ranks together copy and
	// add through the segment (CPU profiles; used over links marked
	// shared_memory).
	SharedMemoryLatency   float64 `json:"shared_memory_latency,omitempty"`
	SharedMemoryBandwidth float64 `json:"shared_memory_bandwidth,omitempty"`
	// KVCacheBytes is each rank's KV cache budget when fixed (the CPU
	// worker's --kv-cache-mb); zero derives it from memory.
	KVCacheBytes float64 `json:"kv_cache_bytes,omitempty"`
	// MemoryUtilization is the share of memory for weights and KV cache.
	MemoryUtilization float64 `json:"memory_utilization,omitempty"`
	// Efficiency holds the profile's uncalibrated priors.
	Efficiency Efficiency `json:"efficiency"`
}

// Link joins ranks or groups. Bandwidth is per device and direction
// (zero: unlimited), Latency one way per hop.
type Link struct {
	Name        string  `json:"name"`
	Description string  `json:"description"`
	Class       string  `json:"class"`
	Bandwidth   float64 `json:"bandwidth"`
	Latency     float64 `json:"latency"`
	// Netshape: bandwidth and latency are netshape's profile of the same
	// name, the figures `tandem up --link` shapes the link to.
	Netshape bool `json:"netshape,omitempty"`
	// SharedMemory: the link joins processes of one machine, whose
	// allreduces nccl/ring sums through its shared segment (CPU only).
	SharedMemory bool `json:"shared_memory,omitempty"`
}

//go:embed data/*.yaml
var data embed.FS

// Hardwares returns the hardware profiles, in file order.
func Hardwares() []Hardware {
	var hs []Hardware
	mustLoad("data/hardware.yaml", &hs)
	return hs
}

// Links returns the link profiles, in file order.
func Links() []Link {
	var ls []Link
	mustLoad("data/links.yaml", &ls)
	for i, l := range ls {
		if !l.Netshape {
			continue
		}
		p, err := netshape.Lookup(l.Name)
		if err != nil {
			panic(fmt.Sprintf("costmodel: link %s: %v", l.Name, err))
		}
		ls[i].Bandwidth, ls[i].Latency = p.BytesPerSecond(), p.Latency.Seconds()
	}
	return ls
}

// mustLoad decodes an embedded profile file; the files are checked by
// the package's tests, so a failure here is a build defect.
func mustLoad(name string, v any) {
	b, err := data.ReadFile(name)
	if err == nil {
		err = yaml.UnmarshalStrict(b, v)
	}
	if err != nil {
		panic(fmt.Sprintf("costmodel: embedded %s: %v", name, err))
	}
}

// HardwareByName returns the named hardware profile (case-insensitive).
func HardwareByName(name string) (Hardware, error) {
	hs := Hardwares()
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) {
			return h, nil
		}
	}
	names := make([]string, len(hs))
	for i, h := range hs {
		names[i] = h.Name
	}
	return Hardware{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownHardware, name, strings.Join(names, ", "))
}

// LinkByName returns the named link profile (case-insensitive).
func LinkByName(name string) (Link, error) {
	ls := Links()
	for _, l := range ls {
		if strings.EqualFold(l.Name, name) {
			return l, nil
		}
	}
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = l.Name
	}
	return Link{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownLink, name, strings.Join(names, ", "))
}

// validate checks what the arithmetic divides by.
func (h Hardware) validate() error {
	switch {
	case h.Kind != KindGPU && h.Kind != KindCPU:
		return fmt.Errorf("hardware %s: kind %q is neither gpu nor cpu", h.Name, h.Kind)
	case h.MemoryBandwidth <= 0 || h.PeakFLOPS <= 0 || h.MemoryBytes <= 0:
		return fmt.Errorf("hardware %s: memory, bandwidth and peak FLOP/s must be positive", h.Name)
	case h.GPUsPerNode < 1:
		return fmt.Errorf("hardware %s: gpus_per_node %d must be at least 1", h.Name, h.GPUsPerNode)
	case h.Kind == KindCPU && h.NetworkBandwidth <= 0:
		return fmt.Errorf("hardware %s: a CPU profile needs network_bandwidth", h.Name)
	case h.Kind == KindCPU && (h.SharedMemoryLatency <= 0 || h.SharedMemoryBandwidth <= 0):
		return fmt.Errorf("hardware %s: a CPU profile needs shared_memory_latency and shared_memory_bandwidth", h.Name)
	case h.TilePeakFLOPS < 0 || h.TilePeakFLOPS > 0 && h.Kind != KindCPU:
		return fmt.Errorf("hardware %s: tile_peak_flops must not be negative, and is for CPU profiles", h.Name)
	case h.Shared && h.Cores < 1:
		return fmt.Errorf("hardware %s: a shared device needs its cores (at least 1)", h.Name)
	}
	return h.Efficiency.validate()
}

func (l Link) validate() error {
	if !slices.Contains([]string{ClassNVLink, ClassPCI, ClassNet, ClassTCP}, l.Class) {
		return fmt.Errorf("link %s: class %q is not nvlink, pci, net or tcp", l.Name, l.Class)
	}
	if l.Bandwidth < 0 || l.Latency < 0 {
		return fmt.Errorf("link %s: bandwidth and latency must not be negative", l.Name)
	}
	if l.Bandwidth == 0 && l.Class != ClassTCP {
		return fmt.Errorf("link %s: only a tcp link may leave bandwidth unlimited", l.Name)
	}
	return nil
}
