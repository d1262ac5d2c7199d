package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/compute/cuda"
)

// skipIfCUDA skips tests of the no-GPU paths on a machine where CUDA
// works: there --device cuda succeeds and auto picks the GPU.
func skipIfCUDA(t *testing.T) {
	t.Helper()
	be, err := cuda.New(cuda.Options{})
	if err == nil {
		be.Close()
		t.Skipf("CUDA works here (%s); this test is about machines without it", be.Name())
	}
	if !errors.Is(err, cuda.ErrNoCUDA) {
		t.Skipf("CUDA is installed but fails: %v", err)
	}
}

func TestDeviceFlag(t *testing.T) {
	t.Setenv(cuda.EnvDriver, "")
	skipIfCUDA(t)
	tests := []struct {
		name    string
		device  string
		wantErr []string // substrings of the error; none: success
		stderr  string   // the backend's line, "" for none
	}{
		{name: "cuda without a driver", device: "cuda", wantErr: []string{"--device cuda", "no CUDA driver was found", "libcuda.so.1", cuda.EnvDriver}},
		{name: "auto falls back to cpu", device: "auto", stderr: "compute backend: cpu (--device auto: cuda: CUDA not available: no CUDA driver was found (libcuda.so.1;"},
		{name: "cpu", device: "cpu"},
		{name: "unknown device", device: "tpu", wantErr: []string{`--device "tpu"`, "cpu, cuda or auto"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := runTandemStreams(t, "generate", "--local", "--preset", "tiny", "--max-tokens", "2", "--device", tc.device, "x")
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("--device %s: %v", tc.device, err)
				}
				if out == "" {
					t.Errorf("--device %s printed nothing", tc.device)
				}
				if line := strings.Contains(errOut, "compute backend:"); line != (tc.stderr != "") || !strings.Contains(errOut, tc.stderr) {
					t.Errorf("--device %s: stderr\n%s\nwant the backend's line %q", tc.device, errOut, tc.stderr)
				}
				return
			}
			if err == nil {
				t.Fatalf("--device %s succeeded; want an error", tc.device)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if tc.device == "cuda" && !errors.Is(err, cuda.ErrNoCUDA) {
				t.Errorf("error does not wrap cuda.ErrNoCUDA: %v", err)
			}
		})
	}
}
