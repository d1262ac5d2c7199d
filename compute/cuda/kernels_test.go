package cuda

import (
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
)

// declRE finds the kernels of the program and their parameter lists.
var declRE = regexp.MustCompile(`extern "C" __global__ void (\w+)\(([^)]*)\)`)

// paramKind maps a C parameter declaration to the argKind Go packs.
func paramKind(decl string) (argKind, bool) {
	d := strings.TrimSpace(decl)
	switch {
	case strings.Contains(d, "*"):
		return argPtr, true
	case strings.HasPrefix(d, "int "):
		return argI32, true
	case strings.HasPrefix(d, "i64 "), strings.HasPrefix(d, "long long "):
		return argI64, true
	case strings.HasPrefix(d, "float "):
		return argF32, true
	}
	return 0, false
}

// Every kernel of the launch table is declared in the embedded sources
// with exactly the parameter types Go packs, and every kernel declared is
// in the table.
func TestLaunchTableMatchesSources(t *testing.T) {
	src, err := kernelSource()
	if err != nil {
		t.Fatal(err)
	}
	decls := map[string][]argKind{}
	for _, m := range declRE.FindAllStringSubmatch(src, -1) {
		var kinds []argKind
		for _, p := range strings.Split(m[2], ",") {
			k, ok := paramKind(p)
			if !ok {
				t.Errorf("%s: parameter %q of a type the launcher cannot pack", m[1], strings.TrimSpace(p))
			}
			kinds = append(kinds, k)
		}
		if _, dup := decls[m[1]]; dup {
			t.Errorf("%s declared twice", m[1])
		}
		decls[m[1]] = kinds
	}
	table := kernelTable()
	inTable := map[string]bool{}
	for k, spec := range table {
		if spec.name == "" {
			t.Errorf("kernel %d has no entry in the launch table", k)
			continue
		}
		inTable[spec.name] = true
		got, ok := decls[spec.name]
		if !ok {
			t.Errorf(`%s: no extern "C" __global__ void %s( in the sources`, spec.name, spec.name)
			continue
		}
		if len(got) != len(spec.params) {
			t.Errorf("%s: the source has %d parameters, the table %d", spec.name, len(got), len(spec.params))
			continue
		}
		for i := range got {
			if got[i] != spec.params[i] {
				t.Errorf("%s: parameter %d is %v in the source, %v in the table", spec.name, i, got[i], spec.params[i])
			}
		}
	}
	for name := range decls {
		if !inTable[name] {
			t.Errorf("%s is declared but not in the launch table", name)
		}
	}
}

// A kernel with a bf16-cache form has it next in the launch table, which
// kvCache.kernel relies on.
func TestBF16Twins(t *testing.T) {
	table := kernelTable()
	for _, k := range []kernel{kKVWrite, kKVPack, kKVUnpack, kAttnDecode, kAttnPrefill} {
		if got, want := table[k+1].name, table[k].name+"_bf16"; got != want {
			t.Errorf("after %s the table has %s, want %s", table[k].name, got, want)
		}
		if !slices.Equal(table[k+1].params, table[k].params) {
			t.Errorf("%s and its bf16 form take different parameters", table[k].name)
		}
	}
}

// NVRTC compiles with no headers: the sources must include none.
func TestSourcesAreSelfContained(t *testing.T) {
	src, err := kernelSource()
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"#include", "__half", "__nv_bfloat16", "__expf", "INFINITY"} {
		if strings.Contains(src, bad) {
			t.Errorf("sources use %q, which needs a header or breaks accuracy", bad)
		}
	}
	if n := strings.Count(src, "#line 1 "); n != len(kernelFiles()) {
		t.Errorf("%d #line markers for %d files", n, len(kernelFiles()))
	}
	// Every embedded file is in the program.
	entries, err := kernelFS.ReadDir("kernels")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(kernelFiles()) {
		t.Errorf("%d embedded files, %d joined", len(entries), len(kernelFiles()))
	}
	// The Go constants mirror the kernels' #defines.
	for _, d := range []struct {
		name string
		v    int
	}{{"MAX_HD", maxHeadDim}, {"PF_BQ", prefillBQ}, {"PF_BK", prefillBK}, {"SAMPLE_THREADS", sampleThreads}} {
		re := regexp.MustCompile(`#define ` + d.name + ` (\d+)`)
		m := re.FindStringSubmatch(src)
		if m == nil || m[1] != strconv.Itoa(d.v) {
			t.Errorf("#define %s is %v, Go says %d", d.name, m, d.v)
		}
	}
}

func TestArgPack(t *testing.T) {
	p := newArgPack()
	args := []arg{ptrArg(0xdeadbeef00), i32Arg(-7), i64Arg(-1 << 40), f32Arg(1.5), i32Arg(1<<31 - 1)}
	params, err := p.fill(args)
	if err != nil {
		t.Fatal(err)
	}
	if params != uintptr(unsafe.Pointer(p.mem)) {
		t.Fatalf("kernelParams %#x is not the pack's memory %p", params, p.mem)
	}
	// Read the pack as cuLaunchKernel does: void** then each value by
	// the kernel's parameter type.
	slots := (*[maxKernelArgs]unsafe.Pointer)(unsafe.Pointer(p.mem))
	if got := *(*uint64)(slots[0]); got != 0xdeadbeef00 {
		t.Errorf("pointer arg %#x", got)
	}
	if got := *(*int32)(slots[1]); got != -7 {
		t.Errorf("int arg %d", got)
	}
	if got := *(*int64)(slots[2]); got != -1<<40 {
		t.Errorf("long long arg %d", got)
	}
	if got := *(*float32)(slots[3]); got != 1.5 {
		t.Errorf("float arg %v", got)
	}
	if got := *(*int32)(slots[4]); got != math.MaxInt32 {
		t.Errorf("int arg %d", got)
	}
	for i := range args {
		// Each value sits in its own 8-byte word past the pointer array.
		want := uintptr(unsafe.Pointer(p.mem)) + uintptr(maxKernelArgs+i)*8
		if uintptr(slots[i]) != want {
			t.Errorf("slot %d points at %#x, want %#x", i, uintptr(slots[i]), want)
		}
	}
	if _, err := p.fill(make([]arg, maxKernelArgs+1)); err == nil {
		t.Error("packing too many arguments succeeded")
	}
}

func TestCheckArgs(t *testing.T) {
	spec := kernelTable()[kRMSNorm]
	tests := []struct {
		name string
		args []arg
		ok   bool
	}{
		{"match", []arg{ptrArg(1), ptrArg(2), ptrArg(3), i32Arg(1), i32Arg(2), f32Arg(1e-5)}, true},
		{"too few", []arg{ptrArg(1)}, false},
		{"float for int", []arg{ptrArg(1), ptrArg(2), ptrArg(3), f32Arg(1), i32Arg(2), f32Arg(1e-5)}, false},
	}
	for _, tc := range tests {
		if err := spec.checkArgs(tc.args); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}

func TestModuleCache(t *testing.T) {
	k1 := moduleKey("src", []string{"--gpu-architecture=sm_90"}, "12.4", "sm_90.cubin")
	if !regexp.MustCompile(`^[0-9a-f]{32}-sm_90\.cubin$`).MatchString(k1) {
		t.Errorf("key %q", k1)
	}
	for _, other := range []string{
		moduleKey("src2", []string{"--gpu-architecture=sm_90"}, "12.4", "sm_90.cubin"),
		moduleKey("src", []string{"--gpu-architecture=sm_90", "-lineinfo"}, "12.4", "sm_90.cubin"),
		moduleKey("src", []string{"--gpu-architecture=sm_90"}, "12.8", "sm_90.cubin"),
	} {
		if other[:32] == k1[:32] {
			t.Errorf("keys collide: %s %s", k1, other)
		}
	}
	if moduleKey("src", []string{"--gpu-architecture=sm_90"}, "12.4", "sm_90.cubin") != k1 {
		t.Error("key not deterministic")
	}
	dir := filepath.Join(t.TempDir(), "a", "b")
	c := moduleCache{dir: dir}
	if c.load(k1) != nil {
		t.Error("empty cache returned a module")
	}
	if err := c.store(k1, []byte("cubin")); err != nil {
		t.Fatal(err)
	}
	if got := string(c.load(k1)); got != "cubin" {
		t.Errorf("load = %q", got)
	}
	if c.path(k1) != filepath.Join(dir, k1) {
		t.Errorf("path %s", c.path(k1))
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("%d files in the cache, want 1 (no temporary left)", len(ents))
	}
	off := moduleCache{}
	if err := off.store(k1, []byte("x")); err != nil || off.load(k1) != nil {
		t.Error("disabled cache stored or loaded")
	}
	if d := DefaultCacheDir(); !strings.HasSuffix(d, filepath.Join("tandem", "cuda")) {
		t.Errorf("DefaultCacheDir %s", d)
	}
}

func TestCompileTarget(t *testing.T) {
	tests := []struct {
		arch      int
		supported []int
		opt, file string
		ok        bool
	}{
		{90, nil, "--gpu-architecture=sm_90", "sm_90.cubin", true},
		{90, []int{75, 80, 86, 89, 90}, "--gpu-architecture=sm_90", "sm_90.cubin", true},
		{100, []int{75, 80, 90}, "--gpu-architecture=compute_90", "compute_90.ptx", true},
		{70, []int{75, 80}, "", "", false},
	}
	for _, tc := range tests {
		opt, cubin, ok := compileTarget(tc.arch, tc.supported)
		if ok != tc.ok || opt != tc.opt || (ok && targetName(opt, cubin) != tc.file) {
			t.Errorf("compileTarget(%d, %v) = %q %v %v", tc.arch, tc.supported, opt, cubin, ok)
		}
	}
}

// The row-major → column-major mapping of dst = x·wᵀ.
func TestLinearGemm(t *testing.T) {
	g := linearGemm(3, 5, 7) // x [3,7], w [5,7], dst [3,5]
	want := gemmShape{transA: cublasOpT, transB: cublasOpN, m: 5, n: 3, k: 7, lda: 7, ldb: 7, ldc: 5}
	if g != want {
		t.Fatalf("got %+v, want %+v", g, want)
	}
	// Evaluate cuBLAS's definition on small matrices and compare.
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}
	w := make([]float32, 35)
	for i := range w {
		w[i] = float32(i%5) - float32(i%3)
	}
	dst := make([]float32, 15)
	// C[i + j*ldc] = Σ_l op(A)[i,l]·B[l,j], op(A)[i,l] = A[l + i*lda] (transposed).
	for i := range int(g.m) {
		for j := range int(g.n) {
			var s float32
			for l := range int(g.k) {
				s += w[l+i*int(g.lda)] * x[l+j*int(g.ldb)]
			}
			dst[i+j*int(g.ldc)] = s
		}
	}
	for r := range 3 {
		for o := range 5 {
			var s float32
			for l := range 7 {
				s += x[r*7+l] * w[o*7+l]
			}
			if dst[r*5+o] != s {
				t.Errorf("dst[%d,%d] = %v, want %v", r, o, dst[r*5+o], s)
			}
		}
	}
}

func TestCStrings(t *testing.T) {
	buf, ptrs := cStrings([]string{"--gpu-architecture=sm_90", "", "-lineinfo"})
	if len(ptrs) != 3 {
		t.Fatal(len(ptrs))
	}
	for i, want := range []string{"--gpu-architecture=sm_90", "", "-lineinfo"} {
		off := int(ptrs[i] - uintptr(unsafe.Pointer(&buf[0])))
		end := off
		for buf[end] != 0 {
			end++
		}
		if got := string(buf[off:end]); got != want {
			t.Errorf("string %d = %q", i, got)
		}
	}
}

func TestPlanAttention(t *testing.T) {
	blocks := func(n int) []int32 { return make([]int32, n) }
	tests := []struct {
		name   string
		seqs   []compute.AttnSeq
		heads  int
		sms    int
		decode bool
		splits int
		work   []int32
	}{
		{
			name:  "prefill: tiles of 16 rows",
			seqs:  []compute.AttnSeq{{QRow: 0, QLen: 20, Pos: 0, Blocks: blocks(2)}, {QRow: 20, QLen: 3, Pos: 5, Blocks: blocks(1)}},
			heads: 4, sms: 132,
			splits: 1,
			work:   []int32{0, 0, 0, 16, 1, 0},
		},
		{
			name:  "decode batch that fills the GPU: no split",
			seqs:  []compute.AttnSeq{{QRow: 0, QLen: 1, Pos: 4000, Blocks: blocks(251)}, {QRow: 1, QLen: 1, Pos: 9, Blocks: blocks(1)}},
			heads: 256, sms: 132,
			decode: true, splits: 1,
			work: []int32{0, 0, 1, 0},
		},
		{
			name:  "one long decode: split-K across the context",
			seqs:  []compute.AttnSeq{{QRow: 0, QLen: 1, Pos: 32767, Blocks: blocks(2048)}},
			heads: 8, sms: 132,
			decode: true, splits: 64,
			work: []int32{0, 0},
		},
		{
			name:  "one short decode: not worth splitting",
			seqs:  []compute.AttnSeq{{QRow: 0, QLen: 1, Pos: 100, Blocks: blocks(7)}},
			heads: 8, sms: 132,
			decode: true, splits: 1,
			work: []int32{0, 0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := planAttention(tc.seqs, tc.heads, tc.sms)
			if p.decode != tc.decode || p.splits != tc.splits || !slices.Equal(p.work, tc.work) {
				t.Errorf("decode %v splits %d work %v; want %v %d %v", p.decode, p.splits, p.work, tc.decode, tc.splits, tc.work)
			}
			off := int32(0)
			for i, s := range tc.seqs {
				want := []int32{int32(s.QRow), int32(s.QLen), int32(s.Pos), off}
				if !slices.Equal(p.seqs[4*i:4*i+4], want) {
					t.Errorf("seq %d: %v, want %v", i, p.seqs[4*i:4*i+4], want)
				}
				off += int32(len(s.Blocks))
			}
			if len(p.blocks) != int(off) {
				t.Errorf("%d block ids, want %d", len(p.blocks), off)
			}
		})
	}
}
