package cuda

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
)

var _ compute.Backend = (*Backend)(nil)

// Options configures a Backend. The zero value uses GPU 0 and the default
// library search and kernel cache.
type Options struct {
	// Device is the CUDA device ordinal.
	Device int
	// CacheDir keeps compiled kernels; "" means DefaultCacheDir() and
	// "off" compiles at every start.
	CacheDir string
	// TF32 lets F32 matrix multiplies use TF32 tensor cores (10-bit
	// mantissa inputs): faster, and no longer bit-comparable with the
	// CPU backend. BF16 and F16 weights always use tensor cores.
	TF32 bool
	// Getenv and Root feed the library search; defaults os.Getenv and "/".
	Getenv func(string) string
	Root   string
}

// Backend runs compute.Backend's ops on one GPU. Ops are enqueued on one
// CUDA stream and return at once; Read (and Write, LoadMat, the sampling
// methods) wait for the stream. Since the interface's ops return no error,
// the first failure is kept: later ops do nothing, Err reports it and Read
// panics with it (a GPU fault leaves the context unusable anyway).
type Backend struct {
	libs    *libraries
	dev     *device
	stream  uintptr
	blas    uintptr
	module  uintptr
	fns     [numKernels]uintptr
	table   [numKernels]kernelSpec
	args    argPack
	stage   stager
	xconv   scratch // activations narrowed for 16-bit GEMMs
	part    scratch // split-K attention partials
	one     float32 // cuBLAS alpha and beta, read from host memory
	zero    float32
	tf32    bool
	name    string
	allocMu sync.Mutex // allocs is shared with the KV side's goroutine
	allocs  []uintptr  // every device allocation, freed by Close
	closed  bool
	errMu   sync.Mutex
	err     error
	kv      kvSide
	compile CompileInfo
}

// kvSide is what KVRead and KVLoad use, apart from the ops' own stream,
// staging and launch memory, so they can run on another goroutine while
// ops run.
type kvSide struct {
	mu     sync.Mutex
	stream uintptr
	// ready is recorded on the ops' stream before each copy, and the KV
	// stream waits for it: a layer's KV written by ops already issued is
	// in place before it is read (the engine streams a prefill's KV layer
	// by layer while later layers run).
	ready uintptr
	args  argPack
	slots scratch
	buf   scratch
}

// CompileInfo says how the kernels were obtained at start-up.
type CompileInfo struct {
	NVRTC  string // NVRTC version
	Target string // e.g. "sm_90.cubin"
	Path   string // the cache file ("" with the cache off)
	Cached bool   // loaded from the cache, not compiled
}

// New finds the CUDA libraries, opens the GPU, compiles (or loads from
// the cache) the kernels and starts the stream. Where CUDA cannot run the
// error wraps ErrNoCUDA and says what was looked for.
func New(opts Options) (*Backend, error) {
	libs, err := loadLibraries(opts.Getenv, opts.Root)
	if err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dev, err := libs.drv.openDevice(opts.Device)
	if err != nil {
		return nil, fmt.Errorf("cuda: driver %s: %w", libs.drvPath, err)
	}
	b := &Backend{libs: libs, dev: dev, one: 1, tf32: opts.TF32, table: kernelTable(),
		args: newArgPack()}
	b.kv.args = newArgPack()
	b.name = fmt.Sprintf("cuda/%s sm_%d", dev.name, dev.arch())
	if err := b.start(opts); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *Backend) start(opts Options) error {
	d := b.libs.drv
	if err := d.check("cuCtxSetCurrent", d.ctxSetCurrent(b.dev.ctx)); err != nil {
		return err
	}
	const nonBlocking = 1 // no implicit sync with the legacy default stream
	if err := d.check("cuStreamCreate", d.streamCreate(&b.stream, nonBlocking)); err != nil {
		return err
	}
	if err := d.check("cuStreamCreate", d.streamCreate(&b.kv.stream, nonBlocking)); err != nil {
		return err
	}
	const disableTiming = 2
	if err := d.check("cuEventCreate", d.eventCreate(&b.kv.ready, disableTiming)); err != nil {
		return err
	}
	bl := b.libs.blas
	if err := bl.check("cublasCreate_v2", bl.create(&b.blas)); err != nil {
		return err
	}
	if err := bl.check("cublasSetStream_v2", bl.setStream(b.blas, b.stream)); err != nil {
		return err
	}
	if bl.setWorkspace != nil {
		// A workspace of our own keeps cuBLAS from allocating inside a
		// stream capture; 32 MiB is what NVIDIA suggests for Hopper.
		const ws = 32 << 20
		p, err := b.malloc(ws)
		if err != nil {
			return err
		}
		if err := bl.check("cublasSetWorkspace_v2", bl.setWorkspace(b.blas, p, ws)); err != nil {
			return err
		}
	}
	if err := b.loadKernels(opts.CacheDir); err != nil {
		return err
	}
	return b.stage.init(d, 4<<20)
}

// loadKernels compiles the embedded program for this GPU, or loads it
// from the cache, and resolves every kernel of the launch table.
func (b *Backend) loadKernels(cacheDir string) error {
	src, err := kernelSource()
	if err != nil {
		return err
	}
	rtc := b.libs.rtc
	archOpt, cubin, ok := compileTarget(b.dev.arch(), rtc.supportedArchs())
	if !ok {
		return fmt.Errorf("%w: NVRTC %s (%s) cannot compile for sm_%d", ErrNoCUDA, rtc.versionString(), b.libs.rtPath, b.dev.arch())
	}
	opts := []string{archOpt}
	switch cacheDir {
	case "":
		cacheDir = DefaultCacheDir()
	case "off":
		cacheDir = ""
	}
	cache := moduleCache{dir: cacheDir}
	b.compile.NVRTC = rtc.versionString()
	b.compile.Target = targetName(archOpt, cubin)
	key := moduleKey(src, opts, b.compile.NVRTC, b.compile.Target)
	if cacheDir != "" {
		b.compile.Path = cache.path(key)
	}
	code := cache.load(key)
	b.compile.Cached = code != nil
	if code == nil {
		if code, err = rtc.compile(src, "tandem.cu", opts, cubin); err != nil {
			return err
		}
		// A cache that cannot be written costs a compile per start, not
		// the start itself.
		_ = cache.store(key, code)
	}
	d := b.libs.drv
	err = d.check("cuModuleLoadData", d.moduleLoadData(&b.module, unsafe.Pointer(&code[0])))
	if err != nil && b.compile.Cached {
		// A stale or damaged cache entry: compile afresh once.
		if code, err = rtc.compile(src, "tandem.cu", opts, cubin); err != nil {
			return err
		}
		_ = cache.store(key, code)
		b.compile.Cached = false
		err = d.check("cuModuleLoadData", d.moduleLoadData(&b.module, unsafe.Pointer(&code[0])))
	}
	if err != nil {
		return err
	}
	for k := range numKernels {
		name := b.table[k].name
		if err := d.check("cuModuleGetFunction "+name, d.moduleGetFunction(&b.fns[k], b.module, name)); err != nil {
			return err
		}
	}
	// attn_prefill needs more than the default 48 KiB of dynamic shared
	// memory for head dimensions above 128.
	if need := prefillShared(maxHeadDim); need > 48<<10 && b.dev.sharedOpt >= need {
		if err := d.check("cuFuncSetAttribute", d.funcSetAttribute(b.fns[kAttnPrefill], funcAttrMaxDynamicShared, int32(need))); err != nil {
			return err
		}
	}
	return nil
}

// Name is "cuda/" with the GPU's name and architecture.
func (b *Backend) Name() string { return b.name }

// Compile says how the kernels were obtained.
func (b *Backend) Compile() CompileInfo { return b.compile }

// Libraries are the files a Backend opened: for a library the dynamic
// loader found by soname, the file it mapped.
type Libraries struct {
	Driver, Cublas, NVRTC string
}

// Libraries says which files the backend opened.
func (b *Backend) Libraries() Libraries {
	return Libraries{Driver: b.libs.drvPath, Cublas: b.libs.blasPath, NVRTC: b.libs.rtPath}
}

// Err is the first failure of an op, or nil.
func (b *Backend) Err() error {
	b.errMu.Lock()
	defer b.errMu.Unlock()
	return b.err
}

func (b *Backend) fail(err error) {
	if err == nil {
		return
	}
	b.errMu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.errMu.Unlock()
}

// enter makes the device's context current on this OS thread and keeps
// the goroutine on it until leave: the context is per thread, and a
// goroutine may move between threads between two calls.
func (b *Backend) enter() bool {
	runtime.LockOSThread()
	if b.closed {
		b.fail(errors.New("cuda: backend used after Close"))
		return false
	}
	d := b.libs.drv
	if err := d.check("cuCtxSetCurrent", d.ctxSetCurrent(b.dev.ctx)); err != nil {
		b.fail(err)
		return false
	}
	return b.Err() == nil
}

func (b *Backend) leave() { runtime.UnlockOSThread() }

// Close waits for the stream and frees everything. The backend must not
// be used afterwards.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	d := b.libs.drv
	var errs []error
	if d.ctxSetCurrent(b.dev.ctx) == cuSuccess {
		if b.stream != 0 {
			errs = append(errs, d.check("cuStreamSynchronize", d.streamSynchronize(b.stream)))
		}
		if b.blas != 0 {
			errs = append(errs, b.libs.blas.check("cublasDestroy_v2", b.libs.blas.destroy(b.blas)))
		}
		b.stage.free(d)
		for _, p := range b.allocs {
			d.memFree(p)
		}
		if b.kv.ready != 0 {
			d.eventDestroy(b.kv.ready)
		}
		for _, s := range []uintptr{b.stream, b.kv.stream} {
			if s != 0 {
				d.streamDestroy(s)
			}
		}
		if b.module != 0 {
			d.moduleUnload(b.module)
		}
	}
	errs = append(errs, d.check("cuDevicePrimaryCtxRelease_v2", d.primaryCtxRelease(b.dev.dev)))
	b.closed = true
	return errors.Join(errs...)
}

// malloc allocates device memory that lives until Close.
func (b *Backend) malloc(n int) (uintptr, error) {
	var p uintptr
	d := b.libs.drv
	if err := d.check("cuMemAlloc_v2", d.memAlloc(&p, uint(max(n, 1)))); err != nil {
		return 0, fmt.Errorf("%w (allocating %d bytes)", err, n)
	}
	b.allocMu.Lock()
	b.allocs = append(b.allocs, p)
	b.allocMu.Unlock()
	return p, nil
}

// release frees an allocation made by malloc before Close.
func (b *Backend) release(p uintptr) {
	b.allocMu.Lock()
	defer b.allocMu.Unlock()
	for i, q := range b.allocs {
		if q == p {
			b.allocs = append(b.allocs[:i], b.allocs[i+1:]...)
			b.libs.drv.memFree(p)
			return
		}
	}
}

// Sync waits for every op issued so far (engine.Options.OpTimes does,
// after each op, to time them on the device).
func (b *Backend) Sync() error {
	defer b.leave()
	if !b.enter() {
		return b.Err()
	}
	if err := b.sync(); err != nil {
		b.fail(err)
		return err
	}
	return nil
}

// sync waits for the stream; the staging arena is free again afterwards.
func (b *Backend) sync() error {
	d := b.libs.drv
	err := d.check("cuStreamSynchronize", d.streamSynchronize(b.stream))
	b.stage.off = 0
	return err
}

// scratch is a device buffer grown on demand and reused.
type scratch struct {
	ptr uintptr
	n   int
}

// grow makes s at least n bytes. Growing waits for stream first, since an
// enqueued op may still be using the old buffer.
func (b *Backend) grow(s *scratch, n int, stream uintptr) (uintptr, error) {
	if s.n >= n {
		return s.ptr, nil
	}
	if s.ptr != 0 {
		d := b.libs.drv
		if err := d.check("cuStreamSynchronize", d.streamSynchronize(stream)); err != nil {
			return 0, err
		}
		if stream == b.stream {
			b.stage.off = 0
		}
		b.release(s.ptr)
		*s = scratch{}
	}
	size := max(n, 2*s.n, 1<<16)
	p, err := b.malloc(size)
	if err != nil {
		return 0, err
	}
	*s = scratch{ptr: p, n: size}
	return p, nil
}

// stager moves an op's small host arguments (token ids, positions, slots,
// block tables) to the device in stream order: copied into pinned host
// memory, then an async copy into the same offset of a device arena. The
// arena is reused from the start after every stream sync, when every copy
// out of it has finished; when it fills up between syncs the stager syncs.
type stager struct {
	host unsafe.Pointer
	dev  uintptr
	size int
	off  int
}

func (s *stager) init(d *driver, size int) error {
	if err := d.check("cuMemAllocHost_v2", d.memAllocHost(&s.host, uint(size))); err != nil {
		return err
	}
	if err := d.check("cuMemAlloc_v2", d.memAlloc(&s.dev, uint(size))); err != nil {
		return err
	}
	s.size = size
	return nil
}

func (s *stager) free(d *driver) {
	if s.host != nil {
		d.memFreeHost(s.host)
	}
	if s.dev != 0 {
		d.memFree(s.dev)
	}
	*s = stager{}
}

// put stages data and returns its device address.
func (b *Backend) put(data []byte) (uintptr, error) {
	if len(data) == 0 {
		return b.stage.dev, nil
	}
	s := &b.stage
	n := (len(data) + 255) &^ 255
	if s.off+n > s.size {
		if err := b.sync(); err != nil {
			return 0, err
		}
		if n > s.size {
			d := b.libs.drv
			s.free(d)
			if err := s.init(d, max(n, 2*s.size)); err != nil {
				return 0, err
			}
		}
	}
	h := unsafe.Add(s.host, s.off)
	copy(unsafe.Slice((*byte)(h), len(data)), data)
	dst := s.dev + uintptr(s.off)
	d := b.libs.drv
	if err := d.check("cuMemcpyHtoDAsync_v2", d.memcpyHtoDAsync(dst, h, uint(len(data)), b.stream)); err != nil {
		return 0, err
	}
	s.off += n
	return dst, nil
}

func int32Bytes(v []int32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

func float32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// launch enqueues kernel k on stream.
func (b *Backend) launchOn(stream uintptr, pack argPack, k kernel, grid [3]int, block, shared int, args ...arg) error {
	if err := b.table[k].checkArgs(args); err != nil {
		return err
	}
	if grid[0] <= 0 || grid[1] <= 0 || grid[2] <= 0 {
		return nil // nothing to do
	}
	params, err := pack.fill(args)
	if err != nil {
		return err
	}
	d := b.libs.drv
	r := d.launchKernel(b.fns[k], uint32(grid[0]), uint32(grid[1]), uint32(grid[2]), uint32(block), 1, 1, uint32(shared), stream, params, 0)
	runtime.KeepAlive(pack.mem)
	return d.check("cuLaunchKernel "+b.table[k].name, r)
}

func (b *Backend) launch(k kernel, grid [3]int, block, shared int, args ...arg) {
	b.fail(b.launchOn(b.stream, b.args, k, grid, block, shared, args...))
}

// elemGrid sizes a grid-stride elementwise launch: enough blocks to fill
// the GPU several times over, no more.
func (b *Backend) elemGrid(n int) [3]int {
	const threads = 256
	return [3]int{min((n+threads-1)/threads, 8*max(b.dev.sms, 1)), 1, 1}
}

func rows(m int) [3]int { return [3]int{m, 1, 1} }
