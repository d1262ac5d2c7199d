package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/compute/cuda"
	"github.com/tandemllm/tandem/internal/cpuquota"
)

// backendFlags choose and configure the compute backend.
type backendFlags struct {
	device  string
	gpu     int
	threads int
	kernels string
}

func (b *backendFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&b.device, "device", "cpu", "compute device: cpu, cuda (an NVIDIA GPU through the CUDA driver, cuBLAS and NVRTC found at run time; fails when there is none), or auto (cuda when a GPU and those libraries are found, else cpu)")
	fl.IntVar(&b.gpu, "gpu", 0, "CUDA device ordinal for --device cuda or auto")
	fl.IntVar(&b.threads, "threads", 0, "CPU threads (0: every core this process may use: the CPUs it runs on, or its cgroup's CPU limit, a container's, where lower)")
	fl.StringVar(&b.kernels, "kernels", "auto", "CPU kernels: auto, amx, avx512bf16, avx512, avx2 or go")
}

// open starts the chosen backend. For --device cuda and auto it writes
// one line to w saying which backend started and, for the GPU, which
// driver, cuBLAS and NVRTC files it opened.
func (b *backendFlags) open(w io.Writer) (compute.Backend, error) {
	switch b.device {
	case "cpu":
	case "cuda", "auto":
		be, err := cuda.New(cuda.Options{Device: b.gpu})
		if err == nil {
			libs, ci := be.Libraries(), be.Compile()
			how := "compiled"
			if ci.Cached {
				how = "cached"
			}
			fmt.Fprintf(w, "compute backend: %s; driver %s, cuBLAS %s, NVRTC %s %s; kernels %s (%s)\n",
				be.Name(), libs.Driver, libs.Cublas, ci.NVRTC, libs.NVRTC, ci.Target, how)
			return be, nil
		}
		// auto falls back only when CUDA is absent; a GPU that is there
		// but fails (bad ordinal, kernels that do not compile) is an
		// error the operator must see.
		if b.device == "cuda" || !errors.Is(err, cuda.ErrNoCUDA) {
			return nil, fmt.Errorf("--device %s: %w", b.device, err)
		}
		first, _, _ := strings.Cut(err.Error(), "\n")
		fmt.Fprintf(w, "compute backend: cpu (--device auto: %s)\n", strings.TrimSuffix(first, "; tried:"))
	default:
		return nil, fmt.Errorf("--device %q: want cpu, cuda or auto", b.device)
	}
	if b.threads < 0 {
		return nil, fmt.Errorf("--threads %d: must be >= 0", b.threads)
	}
	threads := b.threads
	if threads == 0 {
		threads = cpuquota.CPUs()
	}
	be, err := cpu.New(cpu.Options{Threads: threads, Kernels: b.kernels})
	if err != nil {
		return nil, fmt.Errorf("--kernels %q: %w", b.kernels, err)
	}
	return be, nil
}
