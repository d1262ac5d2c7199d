package nvidia

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/tandemllm/tandem/nccl"
)

// These tests run the real NCCL on every GPU of the machine, one rank per
// GPU in goroutines, and skip where NCCL or a GPU is missing.

// gpuGroup is one communicator per local GPU.
type gpuGroup struct {
	lib   *Library
	comms []*Comm
}

func newGPUGroup(tb testing.TB, opts LoadOptions) *gpuGroup {
	tb.Helper()
	l, err := Load(opts)
	if errors.Is(err, nccl.ErrUnavailable) {
		first := strings.TrimSuffix(strings.SplitN(err.Error(), "\n", 2)[0], "; tried:")
		tb.Skipf("skipping GPU test: NCCL or the CUDA driver cannot be loaded here (%s; TestLoadHere lists the paths tried)", first)
	}
	if err != nil {
		tb.Fatal(err)
	}
	var n int32
	if r := l.cu.init(0); r != cudaSuccess {
		tb.Skipf("skipping GPU test: cuInit: %v", l.cu.check("cuInit", r))
	}
	if err := l.cu.check("cuDeviceGetCount", l.cu.deviceGetCount(&n)); err != nil || n == 0 {
		tb.Skipf("skipping GPU test: no CUDA device (%v)", err)
	}
	n = min(n, 8)
	id, err := l.NewUniqueID()
	if err != nil {
		tb.Fatal(err)
	}
	g := &gpuGroup{lib: l, comms: make([]*Comm, n)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Every rank must be joining at once: init blocks until all have.
	err = g.each(func(rank int, _ *Comm) error {
		c, err := l.NewComm(ctx, Options{Rank: rank, Size: int(n), Device: rank, ID: id})
		g.comms[rank] = c
		return err
	})
	if err != nil {
		g.close()
		tb.Fatal(err)
	}
	tb.Logf("NCCL %s from %s, CUDA driver %s, %d GPUs", VersionString(l.Version()), l.Path(), l.DriverPath(), n)
	return g
}

func (g *gpuGroup) close() {
	for _, c := range g.comms {
		if c != nil {
			c.Close()
		}
	}
}

// each runs fn for every rank concurrently and joins their errors.
func (g *gpuGroup) each(fn func(rank int, c *Comm) error) error {
	errs := make([]error, len(g.comms))
	var wg sync.WaitGroup
	for r := range g.comms {
		wg.Go(func() {
			if err := fn(r, g.comms[r]); err != nil {
				errs[r] = fmt.Errorf("rank %d: %w", r, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// onDevice runs fn with c's device context current on a locked thread.
func onDevice(c *Comm, fn func(cu *driver) error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cu := c.lib.cu
	if err := cu.check("cuCtxSetCurrent", cu.ctxSetCurrent(c.cctx)); err != nil {
		return err
	}
	return fn(cu)
}

// upload copies host bytes into fresh device memory; free releases it.
func upload(c *Comm, host []byte) (addr uintptr, free func(), err error) {
	err = onDevice(c, func(cu *driver) error {
		if err := cu.check("cuMemAlloc_v2", cu.memAlloc(&addr, uint(len(host)))); err != nil {
			return err
		}
		return cu.check("cuMemcpyHtoD_v2", cu.memcpyHtoD(addr, unsafe.Pointer(&host[0]), uint(len(host))))
	})
	return addr, func() { onDevice(c, func(cu *driver) error { return cu.check("cuMemFree_v2", cu.memFree(addr)) }) }, err
}

func download(c *Comm, addr uintptr, host []byte) error {
	return onDevice(c, func(cu *driver) error {
		return cu.check("cuMemcpyDtoH_v2", cu.memcpyDtoH(unsafe.Pointer(&host[0]), addr, uint(len(host))))
	})
}

func f32Bytes(s []float32) []byte { return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), 4*len(s)) }
func u16Bytes(s []uint16) []byte  { return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), 2*len(s)) }

// bf16 is the bfloat16 of a float32 that bf16 holds exactly.
func bf16(f float32) uint16 { return uint16(math.Float32bits(f) >> 16) }

func TestGPUCollectives(t *testing.T) {
	g := newGPUGroup(t, LoadOptions{})
	defer g.close()
	checkCollectives(t, g)
}

// The same checks against the fake library, one rank: proves the
// harness (uploads, downloads, expected values) on machines without a GPU.
func TestGPUHarnessOnFake(t *testing.T) {
	f := buildFake(t)
	g := newGPUGroup(t, LoadOptions{Path: f.nccl, CUDADriver: f.cuda})
	defer g.close()
	checkCollectives(t, g)
}

// The benchmark's harness against the fake library, one rank: every
// collective runs, and the bus bandwidth follows nccl-tests' factors.
func TestGPUBenchHarnessOnFake(t *testing.T) {
	f := buildFake(t)
	g := newGPUGroup(t, LoadOptions{Path: f.nccl, CUDADriver: f.cuda})
	defer g.close()
	for _, op := range benchOps {
		per, err := timeCollective(g, op, 64<<10, 3, func() {})
		if err != nil || per <= 0 {
			t.Errorf("%s: %v per call, err %v", op.name, per, err)
		}
	}
	tests := []struct {
		op           string
		n            int
		algbw, busbw float64
	}{
		{"allreduce", 1, 1, 0}, {"allreduce", 8, 1, 1.75},
		{"allgather", 1, 1, 0}, {"allgather", 4, 1, 0.75},
		{"broadcast", 1, 1, 1}, {"broadcast", 8, 1, 1},
	}
	for _, tc := range tests {
		i := slices.IndexFunc(benchOps, func(o benchOp) bool { return o.name == tc.op })
		alg, bus := busBandwidth(benchOps[i], 1e9, tc.n, time.Second)
		if alg != tc.algbw || math.Abs(bus-tc.busbw) > 1e-12 {
			t.Errorf("%s on %d ranks: algbw %g busbw %g, want %g %g", tc.op, tc.n, alg, bus, tc.algbw, tc.busbw)
		}
	}
}

func checkCollectives(t *testing.T, g *gpuGroup) {
	n := len(g.comms)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const count = 1<<20 + 3 // odd, so no size is a lucky multiple
	tests := []struct {
		name string
		run  func(rank int, c *Comm) error
	}{
		{"allreduce f32", func(rank int, c *Comm) error {
			h := make([]float32, count)
			for i := range h {
				h[i] = float32(rank+1) + float32(i%13)
			}
			d, free, err := upload(c, f32Bytes(h))
			if err != nil {
				return err
			}
			defer free()
			if err := c.AllReduce(ctx, nccl.Device(d, count, nccl.F32)); err != nil {
				return err
			}
			if err := download(c, d, f32Bytes(h)); err != nil {
				return err
			}
			for i, v := range h {
				if want := float32(n*(n+1)/2 + n*(i%13)); v != want {
					return fmt.Errorf("element %d = %v, want %v", i, v, want)
				}
			}
			return nil
		}},
		{"allreduce bf16", func(rank int, c *Comm) error {
			h := make([]uint16, count)
			for i := range h {
				h[i] = bf16(float32(rank + 1))
			}
			d, free, err := upload(c, u16Bytes(h))
			if err != nil {
				return err
			}
			defer free()
			if err := c.AllReduce(ctx, nccl.Device(d, count, nccl.BF16)); err != nil {
				return err
			}
			if err := download(c, d, u16Bytes(h)); err != nil {
				return err
			}
			want := bf16(float32(n * (n + 1) / 2))
			for i, v := range h {
				if v != want {
					return fmt.Errorf("element %d = %#04x, want %#04x", i, v, want)
				}
			}
			return nil
		}},
		{"allgather", func(rank int, c *Comm) error {
			const m = 1001
			h := make([]float32, m)
			for i := range h {
				h[i] = float32(rank*10000 + i)
			}
			send, free, err := upload(c, f32Bytes(h))
			if err != nil {
				return err
			}
			defer free()
			out := make([]float32, n*m)
			recv, freeRecv, err := upload(c, f32Bytes(out))
			if err != nil {
				return err
			}
			defer freeRecv()
			if err := c.AllGather(ctx, nccl.Device(send, m, nccl.F32), nccl.Device(recv, n*m, nccl.F32)); err != nil {
				return err
			}
			if err := download(c, recv, f32Bytes(out)); err != nil {
				return err
			}
			for i, v := range out {
				if want := float32(i/m*10000 + i%m); v != want {
					return fmt.Errorf("element %d = %v, want %v", i, v, want)
				}
			}
			return nil
		}},
		{"broadcast from the last rank, then barrier", func(rank int, c *Comm) error {
			h := []float32{float32(rank), float32(rank) + 0.5}
			d, free, err := upload(c, f32Bytes(h))
			if err != nil {
				return err
			}
			defer free()
			if err := c.Broadcast(ctx, nccl.Device(d, 2, nccl.F32), n-1); err != nil {
				return err
			}
			if err := download(c, d, f32Bytes(h)); err != nil {
				return err
			}
			if h[0] != float32(n-1) || h[1] != float32(n-1)+0.5 {
				return fmt.Errorf("got %v, want rank %d's values", h, n-1)
			}
			return c.Barrier(ctx)
		}},
		{"send/recv around the ring", func(rank int, c *Comm) error {
			if n == 1 {
				return nil // no peer to talk to
			}
			out, in := []float32{float32(rank), 7}, []float32{-1, -1}
			s, freeS, err := upload(c, f32Bytes(out))
			if err != nil {
				return err
			}
			defer freeS()
			r, freeR, err := upload(c, f32Bytes(in))
			if err != nil {
				return err
			}
			defer freeR()
			next, prev := (rank+1)%n, (rank+n-1)%n
			// Even ranks send first, odd ranks receive first, so every
			// Send meets a posted Recv.
			steps := []func() error{
				func() error { return c.Send(ctx, nccl.Device(s, 2, nccl.F32), next) },
				func() error { return c.Recv(ctx, nccl.Device(r, 2, nccl.F32), prev) },
			}
			if rank%2 == 1 {
				steps[0], steps[1] = steps[1], steps[0]
			}
			for _, step := range steps {
				if err := step(); err != nil {
					return err
				}
			}
			if err := download(c, r, f32Bytes(in)); err != nil {
				return err
			}
			if in[0] != float32(prev) || in[1] != 7 {
				return fmt.Errorf("received %v, want [%d 7]", in, prev)
			}
			return nil
		}},
	}
	for _, tc := range tests {
		if err := g.each(tc.run); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
}

// benchOps are the collectives BenchmarkGPUCollectives times, with
// nccl-tests' bus bandwidth factor for n ranks (busbw = algbw × bus(n),
// the bytes each link carries) and one call on buffers of count float32
// per rank (allgather: count in all, count/n from each rank).
type benchOp struct {
	name string
	bus  func(n float64) float64
	call func(ctx context.Context, c *Comm, send, recv uintptr, count, n int) error
}

var benchOps = []benchOp{
	{"allreduce", func(n float64) float64 { return 2 * (n - 1) / n }, func(ctx context.Context, c *Comm, _, recv uintptr, count, _ int) error {
		return c.AllReduce(ctx, nccl.Device(recv, count, nccl.F32))
	}},
	{"allgather", func(n float64) float64 { return (n - 1) / n }, func(ctx context.Context, c *Comm, send, recv uintptr, count, n int) error {
		return c.AllGather(ctx, nccl.Device(send, count/n, nccl.F32), nccl.Device(recv, count, nccl.F32))
	}},
	{"broadcast", func(float64) float64 { return 1 }, func(ctx context.Context, c *Comm, _, recv uintptr, count, _ int) error {
		return c.Broadcast(ctx, nccl.Device(recv, count, nccl.F32), 0)
	}},
}

// BenchmarkGPUCollectives prints each collective's algorithm and bus
// bandwidth per message size on every GPU of the machine, as nccl-tests
// defines them (algbw = bytes / time; on one GPU allreduce and allgather
// carry nothing over a link, so their busbw is 0, and broadcast's is a
// local copy). Each call waits for its stream, as the engine's calls do,
// so small sizes show the per-call latency.
func BenchmarkGPUCollectives(b *testing.B) {
	g := newGPUGroup(b, LoadOptions{})
	defer g.close()
	for _, op := range benchOps {
		for _, size := range []int{64 << 10, 1 << 20, 16 << 20, 128 << 20} {
			b.Run(fmt.Sprintf("%s/%dKiB", op.name, size>>10), func(b *testing.B) { benchCollective(b, g, op, size) })
		}
	}
}

// benchCollective times op on size bytes per rank (size a multiple of
// 4 × ranks) and reports algbw_GB/s and busbw_GB/s.
func benchCollective(b *testing.B, g *gpuGroup, op benchOp, size int) {
	b.SetBytes(int64(size))
	per, err := timeCollective(g, op, size, b.N, b.ResetTimer)
	if err != nil {
		b.Fatal(err)
	}
	algbw, busbw := busBandwidth(op, size, len(g.comms), per)
	b.ReportMetric(algbw, "algbw_GB/s")
	b.ReportMetric(busbw, "busbw_GB/s")
	b.Logf("%s f32 %d bytes on %d GPUs: %.1f µs, algbw %.2f GB/s, busbw %.2f GB/s", op.name, size, len(g.comms), per.Seconds()*1e6, algbw, busbw)
}

// timeCollective runs op iters times on every rank at once and returns
// the time per call; start is called once the buffers are ready.
func timeCollective(g *gpuGroup, op benchOp, size, iters int, start func()) (time.Duration, error) {
	n, count := len(g.comms), size/4
	send, recv := make([]uintptr, n), make([]uintptr, n)
	for r, c := range g.comms {
		for _, p := range []*uintptr{&send[r], &recv[r]} {
			d, free, err := upload(c, make([]byte, size))
			if err != nil {
				return 0, err
			}
			defer free()
			*p = d
		}
	}
	start()
	t0 := time.Now()
	err := g.each(func(rank int, c *Comm) error {
		for range iters {
			if err := op.call(context.Background(), c, send[rank], recv[rank], count, n); err != nil {
				return err
			}
		}
		return nil
	})
	return time.Since(t0) / time.Duration(max(iters, 1)), err
}

// busBandwidth is nccl-tests' algbw and busbw in GB/s for one call of op
// on size bytes across n ranks taking per.
func busBandwidth(op benchOp, size, n int, per time.Duration) (algbw, busbw float64) {
	algbw = float64(size) / per.Seconds() / 1e9
	return algbw, algbw * op.bus(float64(n))
}
