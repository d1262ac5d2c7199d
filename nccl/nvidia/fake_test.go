package nvidia

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"

	"github.com/tandemllm/tandem/nccl"
)

// Knobs of the fake library (testdata/fake/README.md).
const (
	knobHang = iota
	knobAsyncError
	knobInitPolls
	knobFail
	knobVersion
)

// fake is a freshly built pair of fake libraries. Each test builds its
// own under t.TempDir, so the fakes' C globals never leak between tests.
type fake struct {
	nccl, ncclOld, cuda string
	set                 func(knob, value int32) // fake_set in libfakenccl.so
	setOld              func(knob, value int32) // fake_set in libfakenccl-old.so
	contexts            func() int32            // primary contexts retained
	notifyPending       func(fd int32)          // fake_notify_pending in the driver
}

func buildFake(t *testing.T) *fake {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler to build the fake NCCL; the binding tests need one")
	}
	dir := t.TempDir()
	// The driver's soname is unique per build: the dynamic loader
	// satisfies a dependency with any loaded library of the same soname,
	// so an earlier test's fake driver would otherwise serve this test's
	// fake NCCL while Load opens the new one, and they would disagree.
	cudaName := fmt.Sprintf("libfakecuda-%d.so", time.Now().UnixNano())
	f := &fake{
		nccl:    filepath.Join(dir, "libfakenccl.so"),
		ncclOld: filepath.Join(dir, "libfakenccl-old.so"),
		cuda:    filepath.Join(dir, cudaName),
	}
	for _, args := range [][]string{
		{"-o", f.cuda, "testdata/fake/cuda.c", "-Wl,-soname," + cudaName},
		{"-o", f.nccl, "testdata/fake/nccl.c", f.cuda, "-Wl,-rpath,$ORIGIN"},
		{"-DNO_CONFIG", "-o", f.ncclOld, "testdata/fake/nccl.c", f.cuda, "-Wl,-rpath,$ORIGIN"},
	} {
		out, err := exec.Command(cc, append([]string{"-shared", "-fPIC", "-Wall", "-Werror"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("building fake: %v\n%s", err, out)
		}
	}
	bind := func(path, sym string, fn any) {
		h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
		if err != nil {
			t.Fatal(err)
		}
		purego.RegisterLibFunc(fn, h, sym)
	}
	bind(f.nccl, "fake_set", &f.set)
	bind(f.ncclOld, "fake_set", &f.setOld)
	bind(f.cuda, "fake_contexts", &f.contexts)
	bind(f.cuda, "fake_notify_pending", &f.notifyPending)
	return f
}

// pendingEvent arms the fake driver's event that a call waits on its
// stream; the function returned waits for it, failing t after within.
func (f *fake) pendingEvent(t *testing.T) func(within time.Duration) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	f.notifyPending(int32(w.Fd()))
	return func(within time.Duration) {
		t.Helper()
		if err := r.SetReadDeadline(time.Now().Add(within)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(make([]byte, 1)); err != nil {
			t.Fatalf("no call waited on its stream within %v: %v", within, err)
		}
	}
}

func (f *fake) load(t *testing.T, path string) *Library {
	t.Helper()
	l, err := Load(LoadOptions{Path: path, CUDADriver: f.cuda})
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	return l
}

// newID is what rank 0 does: ask the library, then round-trip the text
// form as if through etcd.
func newID(t *testing.T, l *Library) UniqueID {
	t.Helper()
	id, err := l.NewUniqueID()
	if err != nil {
		t.Fatal(err)
	}
	var got UniqueID
	if err := got.UnmarshalText([]byte(id.String())); err != nil {
		t.Fatal(err)
	}
	return got
}

type callLog struct{ calls []nccl.Call }

func (r *callLog) Record(c nccl.Call) { r.calls = append(r.calls, c) }

// devFloats puts s in fake device memory through the driver binding.
func devFloats(t *testing.T, l *Library, s []float32) uintptr {
	t.Helper()
	var p uintptr
	if err := l.cu.check("cuMemAlloc_v2", l.cu.memAlloc(&p, uint(4*len(s)))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.cu.memFree(p) })
	if err := l.cu.check("cuMemcpyHtoD_v2", l.cu.memcpyHtoD(p, unsafe.Pointer(&s[0]), uint(4*len(s)))); err != nil {
		t.Fatal(err)
	}
	return p
}

func hostFloats(t *testing.T, l *Library, p uintptr, n int) []float32 {
	t.Helper()
	s := make([]float32, n)
	if err := l.cu.check("cuMemcpyDtoH_v2", l.cu.memcpyDtoH(unsafe.Pointer(&s[0]), p, uint(4*n))); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFakeLoadVersion(t *testing.T) {
	f := buildFake(t)
	tests := []struct {
		version int32
		want    string // version string, or "" for rejection
	}{
		{22105, "2.21.5"},
		{21000, "2.10.0"},
		{20905, ""}, // 2.9.5: no bf16
		{2804, ""},  // old encoding, 2.8.4
	}
	for _, tc := range tests {
		f.set(knobVersion, tc.version)
		l, err := Load(LoadOptions{Path: f.nccl, CUDADriver: f.cuda})
		if tc.want == "" {
			if !errors.Is(err, nccl.ErrUnavailable) || !strings.Contains(err.Error(), "need 2.10") {
				t.Errorf("version %d: err = %v, want ErrUnavailable naming 2.10", tc.version, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("version %d: %v", tc.version, err)
		}
		if got := VersionString(l.Version()); got != tc.want || l.Path() != f.nccl {
			t.Errorf("version %d: %s from %s, want %s from %s", tc.version, got, l.Path(), tc.want, f.nccl)
		}
	}
}

func TestFakeCollectives(t *testing.T) {
	f := buildFake(t)
	for _, lib := range []struct{ name, path string }{
		{"config init (2.14+)", f.nccl},
		{"blocking init (older)", f.ncclOld},
	} {
		t.Run(lib.name, func(t *testing.T) {
			l := f.load(t, lib.path)
			if got, want := l.api.commInitRankCfg != nil, lib.path == f.nccl; got != want {
				t.Fatalf("ncclCommInitRankConfig bound = %v, want %v", got, want)
			}
			rec := &callLog{}
			// A successful init proves the 128-byte id crossed the C ABI
			// intact: the fake rejects any byte out of place.
			c, err := l.NewComm(context.Background(), Options{Rank: 0, Size: 1, ID: newID(t, l), Recorder: rec})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			in := []float32{1, 2, 3, 4}
			buf := devFloats(t, l, in)
			recv := devFloats(t, l, make([]float32, 4))
			steps := []struct {
				kind nccl.Kind
				run  func() error
			}{
				{nccl.KindAllReduce, func() error { return c.AllReduce(ctx, nccl.Device(buf, 4, nccl.F32)) }},
				{nccl.KindAllGather, func() error {
					return c.AllGather(ctx, nccl.Device(buf, 4, nccl.F32), nccl.Device(recv, 4, nccl.F32))
				}},
				{nccl.KindBroadcast, func() error { return c.Broadcast(ctx, nccl.Device(buf, 4, nccl.F32), 0) }},
				{nccl.KindBarrier, func() error { return c.Barrier(ctx) }},
			}
			for _, s := range steps {
				if err := s.run(); err != nil {
					t.Fatalf("%s: %v", s.kind, err)
				}
			}
			if got := hostFloats(t, l, recv, 4); !equalFloats(got, in) {
				t.Errorf("allgather of one rank = %v, want %v", got, in)
			}
			if len(rec.calls) != len(steps) {
				t.Fatalf("recorded %d calls, want %d", len(rec.calls), len(steps))
			}
			for i, s := range steps {
				if rec.calls[i].Kind != s.kind || rec.calls[i].Start.IsZero() {
					t.Errorf("call %d = %+v, want kind %s with a start time", i, rec.calls[i], s.kind)
				}
			}
			if rec.calls[0].Bytes != 16 {
				t.Errorf("allreduce recorded %d bytes, want 16", rec.calls[0].Bytes)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if n := f.contexts(); n != 0 {
				t.Errorf("%d primary contexts still retained after Close", n)
			}
			if err := c.AllReduce(ctx, nccl.Device(buf, 4, nccl.F32)); !errors.Is(err, nccl.ErrClosed) {
				t.Errorf("AllReduce after Close: %v, want ErrClosed", err)
			}
		})
	}
}

func equalFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFakeBadIDIsTypedError(t *testing.T) {
	f := buildFake(t)
	for _, tc := range []struct {
		path, detail string
	}{
		{f.nccl, "fake last error"},
		{f.ncclOld, ""}, // no ncclGetLastError before 2.13
	} {
		l := f.load(t, tc.path)
		id, _ := UniqueIDFromBytes(make([]byte, UniqueIDBytes))
		id.internal[0] = 1 // non-zero, so it passes validation, but not NCCL's
		_, err := l.NewComm(context.Background(), Options{Size: 1, ID: id})
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%s: err = %v, want *Error", tc.path, err)
		}
		if e.Code != InvalidArgument || e.Text != "fake: invalid argument" || e.Detail != tc.detail {
			t.Errorf("%s: error = %+v, want ncclInvalidArgument with the library's text and detail %q", tc.path, e, tc.detail)
		}
		if n := f.contexts(); n != 0 {
			t.Errorf("%d primary contexts retained after a failed NewComm", n)
		}
	}
}

// A missing peer must never hang a rank: ctx expiry aborts.
func TestFakeDeadlineAborts(t *testing.T) {
	f := buildFake(t)
	l := f.load(t, f.nccl)
	c, err := l.NewComm(context.Background(), Options{Rank: 0, Size: 2, ID: newID(t, l)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := devFloats(t, l, []float32{1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = c.AllReduce(ctx, nccl.Device(buf, 1, nccl.F32))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, nccl.ErrClosed) {
		t.Fatalf("err = %v, want DeadlineExceeded and ErrClosed", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v to notice a 30ms deadline", d)
	}
	if err := c.Barrier(context.Background()); !errors.Is(err, nccl.ErrClosed) {
		t.Errorf("Barrier after abort: %v, want ErrClosed", err)
	}
}

func TestFakeAsyncErrors(t *testing.T) {
	tests := []struct {
		name     string
		knob     int32
		value    int32
		code     Result
		peerLost bool
	}{
		{"remote error while waiting", knobAsyncError, int32(RemoteError), RemoteError, true},
		{"system error while waiting", knobAsyncError, int32(SystemError), SystemError, false},
		{"launch fails", knobFail, int32(InvalidUsage), InvalidUsage, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := buildFake(t)
			l := f.load(t, f.nccl)
			c, err := l.NewComm(context.Background(), Options{Rank: 1, Size: 2, ID: newID(t, l)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			f.set(tc.knob, tc.value)
			buf := devFloats(t, l, []float32{1})
			err = c.AllReduce(context.Background(), nccl.Device(buf, 1, nccl.F32))
			var e *Error
			if !errors.As(err, &e) || e.Code != tc.code {
				t.Fatalf("err = %v, want *Error with %v", err, tc.code)
			}
			if got := errors.Is(err, nccl.ErrPeerLost); got != tc.peerLost {
				t.Errorf("errors.Is(ErrPeerLost) = %v, want %v", got, tc.peerLost)
			}
			if err := c.AllReduce(context.Background(), nccl.Device(buf, 1, nccl.F32)); !errors.Is(err, nccl.ErrClosed) {
				t.Errorf("after an error: %v, want ErrClosed (communicator aborted)", err)
			}
		})
	}
}

func TestFakeNonBlockingInit(t *testing.T) {
	tests := []struct {
		name    string
		polls   int32
		timeout time.Duration
		wantErr error
	}{
		{"completes after a few polls", 3, time.Minute, nil},
		{"peer never joins", 1 << 30, 30 * time.Millisecond, context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := buildFake(t)
			l := f.load(t, f.nccl)
			f.set(knobInitPolls, tc.polls)
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			c, err := l.NewComm(ctx, Options{Size: 1, ID: newID(t, l)})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr != nil) != (err != nil) {
				t.Fatalf("NewComm: %v, want %v", err, tc.wantErr)
			}
			if c != nil {
				if err := c.Barrier(context.Background()); err != nil {
					t.Error(err)
				}
				c.Close()
			}
			if n := f.contexts(); n != 0 {
				t.Errorf("%d primary contexts retained", n)
			}
		})
	}
}

func TestFakeCloseUnblocksCall(t *testing.T) {
	f := buildFake(t)
	l := f.load(t, f.nccl)
	c, err := l.NewComm(context.Background(), Options{Rank: 0, Size: 2, ID: newID(t, l)})
	if err != nil {
		t.Fatal(err)
	}
	buf := devFloats(t, l, []float32{1})
	waiting := f.pendingEvent(t)
	done := make(chan error, 1)
	go func() { done <- c.AllReduce(context.Background(), nccl.Device(buf, 1, nccl.F32)) }()
	waiting(5 * time.Second) // the call polls its stream: Close now meets it blocked
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, nccl.ErrClosed) {
			t.Errorf("blocked AllReduce returned %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock AllReduce")
	}
}
