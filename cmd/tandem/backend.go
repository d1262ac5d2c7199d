package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/compute/cpu"
)

// backendFlags choose and configure the compute backend.
type backendFlags struct {
	device  string
	threads int
	kernels string
}

func (b *backendFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&b.device, "device", "cpu", "compute device: cpu")
	fl.IntVar(&b.threads, "threads", 0, "CPU threads (0: all cores)")
	fl.StringVar(&b.kernels, "kernels", "auto", "CPU kernels: auto, avx512, avx2 or go")
}

func (b *backendFlags) open() (compute.Backend, error) {
	if b.device != "cpu" {
		return nil, fmt.Errorf("--device %q: only cpu is available in this build", b.device)
	}
	if b.threads < 0 {
		return nil, fmt.Errorf("--threads %d: must be >= 0", b.threads)
	}
	be, err := cpu.New(cpu.Options{Threads: b.threads, Kernels: b.kernels})
	if err != nil {
		return nil, fmt.Errorf("--kernels %q: %w", b.kernels, err)
	}
	return be, nil
}
