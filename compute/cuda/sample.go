package cuda

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
)

// ArgMax writes the index of the largest value of each of m rows of n
// logits into dst (ties: the lowest index), computed on the GPU so that
// only m ints cross to the host. It waits for the stream.
func (b *Backend) ArgMax(dst []int32, logits compute.Buf, m, n int) error {
	return b.sample(dst, logits, m, n, nil, nil)
}

// Sample draws one token per row from softmax(logits/temps[i]) by inverse
// CDF at uniforms[i] in [0, 1), which the caller draws from its seeded
// generator; temps[i] <= 0 is greedy. It waits for the stream.
func (b *Backend) Sample(dst []int32, logits compute.Buf, m, n int, temps, uniforms []float32) error {
	if len(temps) < m || len(uniforms) < m {
		return fmt.Errorf("cuda: Sample of %d rows with %d temperatures and %d uniforms", m, len(temps), len(uniforms))
	}
	return b.sample(dst, logits, m, n, temps[:m], uniforms[:m])
}

func (b *Backend) sample(dst []int32, logits compute.Buf, m, n int, temps, us []float32) error {
	lb := bufOf(logits)
	if len(dst) < m || m*n > lb.n {
		return fmt.Errorf("cuda: sampling %d rows of %d from a buffer of %d into %d ids", m, n, lb.n, len(dst))
	}
	if m == 0 {
		return nil
	}
	ok := b.enter()
	defer b.leave()
	if !ok {
		return b.Err()
	}
	out, err := b.grow(&b.xconv, 4*m, b.stream)
	if err != nil {
		return err
	}
	if temps == nil {
		b.launch(kArgmax, rows(m), sampleThreads, 0, ptrArg(out), ptrArg(lb.ptr), i32Arg(m), i32Arg(n))
	} else {
		tp, err := b.put(float32Bytes(temps))
		if err != nil {
			return err
		}
		up, err := b.put(float32Bytes(us))
		if err != nil {
			return err
		}
		b.launch(kSample, rows(m), sampleThreads, 0, ptrArg(out), ptrArg(lb.ptr), ptrArg(tp), ptrArg(up), i32Arg(m), i32Arg(n))
	}
	d := b.libs.drv
	b.fail(d.check("cuMemcpyDtoHAsync_v2", d.memcpyDtoHAsync(unsafe.Pointer(&dst[0]), out, uint(4*m), b.stream)))
	b.fail(b.sync())
	return b.Err()
}

// ErrCapturing is returned for what cannot happen inside Capture.
var ErrCapturing = errors.New("cuda: not allowed while capturing a graph")

// Graph is a captured sequence of ops, replayed by Launch with the launch
// overhead of one call. A replay reads the same device addresses as the
// capture, including the staged host arguments (ids, positions, slots,
// block tables) as they were captured: capture steps whose shapes and
// metadata repeat, and re-capture when they change.
type Graph struct {
	b     *Backend
	graph uintptr
	exec  uintptr
}

// Capture runs f with the stream in capture mode: the ops f issues are
// recorded into a Graph instead of running. f must not Read, Write or
// sample, nor make the staging arena or a scratch buffer grow (run the
// same step once before capturing it); any of these fails the capture.
func (b *Backend) Capture(f func()) (*Graph, error) {
	if !b.enter() {
		b.leave()
		return nil, b.Err()
	}
	d := b.libs.drv
	if err := b.sync(); err != nil {
		b.leave()
		return nil, err
	}
	if err := d.check("cuStreamBeginCapture_v2", d.streamBeginCap(b.stream, captureModeThreadLocal)); err != nil {
		b.leave()
		return nil, err
	}
	// f's ops lock and unlock the thread themselves; the lock taken by
	// enter keeps the whole capture on this thread, which thread-local
	// capture mode requires.
	f()
	g := &Graph{b: b}
	err := d.check("cuStreamEndCapture", d.streamEndCap(b.stream, &g.graph))
	if err == nil {
		err = b.Err()
	}
	if err == nil {
		err = d.check("cuGraphInstantiateWithFlags", d.graphInstantiate(&g.exec, g.graph, 0))
	}
	b.leave()
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("cuda: capture: %w", err)
	}
	return g, nil
}

// Launch replays the graph on the backend's stream.
func (g *Graph) Launch() error {
	b := g.b
	ok := b.enter()
	defer b.leave()
	if !ok {
		return b.Err()
	}
	d := b.libs.drv
	err := d.check("cuGraphLaunch", d.graphLaunch(g.exec, b.stream))
	b.fail(err)
	return err
}

// Close frees the graph.
func (g *Graph) Close() {
	b := g.b
	b.enter()
	defer b.leave()
	d := b.libs.drv
	if g.exec != 0 {
		d.graphExecDestroy(g.exec)
	}
	if g.graph != 0 {
		d.graphDestroy(g.graph)
	}
	*g = Graph{b: b}
}

// Time runs f and returns the GPU time between its first and last op,
// measured with two events on the stream (it waits for the stream).
func (b *Backend) Time(f func()) (time.Duration, error) {
	ok := b.enter()
	defer b.leave()
	if !ok {
		return 0, b.Err()
	}
	d := b.libs.drv
	var ev [2]uintptr
	for i := range ev {
		if err := d.check("cuEventCreate", d.eventCreate(&ev[i], 0)); err != nil {
			return 0, err
		}
		defer d.eventDestroy(ev[i])
	}
	if err := d.check("cuEventRecord", d.eventRecord(ev[0], b.stream)); err != nil {
		return 0, err
	}
	f()
	if err := d.check("cuEventRecord", d.eventRecord(ev[1], b.stream)); err != nil {
		return 0, err
	}
	if err := d.check("cuEventSynchronize", d.eventSynchronize(ev[1])); err != nil {
		return 0, err
	}
	b.stage.off = 0
	var ms float32
	if err := d.check("cuEventElapsedTime", d.eventElapsedTime(&ms, ev[0], ev[1])); err != nil {
		return 0, err
	}
	return time.Duration(float64(ms) * float64(time.Millisecond)), b.Err()
}
