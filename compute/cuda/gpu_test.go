package cuda_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/compute/cuda"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/internal/half"
	"github.com/tandemllm/tandem/model/preset"
)

// pair opens the GPU and a CPU reference. Without CUDA the test is
// skipped (and only then: any other failure to start is a failure).
func pair(t *testing.T) (*cuda.Backend, *cpu.Backend) {
	t.Helper()
	g, err := cuda.New(cuda.Options{CacheDir: t.TempDir()})
	if errors.Is(err, cuda.ErrNoCUDA) {
		t.Skipf("no CUDA on this machine; GPU numerics not checked: %v", firstLine(err))
	}
	if err != nil {
		t.Fatal(err)
	}
	libs, ci := g.Libraries(), g.Compile()
	t.Logf("%s: driver %s, cuBLAS %s, NVRTC %s %s (%s, cached %t)", g.Name(), libs.Driver, libs.Cublas, ci.NVRTC, libs.NVRTC, ci.Target, ci.Cached)
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
	})
	c, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return g, c
}

func firstLine(err error) string {
	s := err.Error()
	for i, r := range s {
		if r == '\n' {
			return s[:i]
		}
	}
	return s
}

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func encode(dt compute.DType, vals []float32) []byte {
	out := make([]byte, len(vals)*dt.Size())
	for i, v := range vals {
		switch dt {
		case compute.F32:
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		case compute.BF16:
			binary.LittleEndian.PutUint16(out[2*i:], half.BF16FromFloat32(v))
		case compute.F16:
			binary.LittleEndian.PutUint16(out[2*i:], half.F16FromFloat32(v))
		}
	}
	return out
}

// both holds the same buffer on the two backends.
type both struct{ g, c compute.Buf }

func load(g *cuda.Backend, c *cpu.Backend, v []float32) both {
	b := both{g.Alloc(len(v)), c.Alloc(len(v))}
	g.Write(b.g, 0, v)
	c.Write(b.c, 0, v)
	return b
}

// compare reads both and checks |gpu-cpu| <= tol·(1+|cpu|).
func compare(t *testing.T, what string, g *cuda.Backend, c *cpu.Backend, b both, tol float64) {
	t.Helper()
	n := b.g.Len()
	gv, cv := make([]float32, n), make([]float32, n)
	g.Read(gv, b.g, 0)
	c.Read(cv, b.c, 0)
	bad := 0
	for i := range gv {
		if math.Abs(float64(gv[i]-cv[i])) > tol*(1+math.Abs(float64(cv[i]))) || math.IsNaN(float64(gv[i])) {
			if bad < 5 {
				t.Errorf("%s[%d]: gpu %v, cpu %v", what, i, gv[i], cv[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values beyond tolerance %g", what, bad, n, tol)
	}
}

// Tolerances: fp32 elementwise ops differ only by the GPU's expf, sincosf
// and rsqrtf (a few ulp); reductions also by summation order; 16-bit
// GEMMs round x to bf16 (8 bits) or f16 (11 bits) before multiplying.
const (
	tolElem   = 1e-5
	tolReduce = 1e-4
	tolF32MM  = 1e-4
	tolBF16MM = 2e-2
	tolF16MM  = 3e-3
	tolAttn   = 1e-4
)

func TestGPUElementwiseAndNorms(t *testing.T) {
	g, c := pair(t)
	r := rand.New(rand.NewPCG(1, 2))
	const m, n = 7, 1000
	x := load(g, c, randVec(r, m*n))
	y := load(g, c, randVec(r, m*n))
	w := load(g, c, randVec(r, n))
	bias := load(g, c, randVec(r, n))
	dst := load(g, c, make([]float32, m*n))

	g.Add(dst.g, x.g, y.g, m*n)
	c.Add(dst.c, x.c, y.c, m*n)
	compare(t, "Add", g, c, dst, tolElem)

	g.SiLUMul(dst.g, x.g, y.g, m*n)
	c.SiLUMul(dst.c, x.c, y.c, m*n)
	compare(t, "SiLUMul", g, c, dst, tolElem)

	g.GELU(dst.g, m*n)
	c.GELU(dst.c, m*n)
	compare(t, "GELU", g, c, dst, tolElem)

	g.AddBias(dst.g, bias.g, m)
	c.AddBias(dst.c, bias.c, m)
	compare(t, "AddBias", g, c, dst, tolElem)

	g.RMSNorm(dst.g, x.g, w.g, m, n, 1e-6)
	c.RMSNorm(dst.c, x.c, w.c, m, n, 1e-6)
	compare(t, "RMSNorm", g, c, dst, tolReduce)

	g.LayerNorm(dst.g, x.g, w.g, bias.g, m, n, 1e-5)
	c.LayerNorm(dst.c, x.c, w.c, bias.c, m, n, 1e-5)
	compare(t, "LayerNorm", g, c, dst, tolReduce)

	// The fused residual norm against Add then RMSNorm.
	g.AddRMSNorm(dst.g, x.g, y.g, w.g, m, n, 1e-6)
	c.Add(x.c, x.c, y.c, m*n)
	c.RMSNorm(dst.c, x.c, w.c, m, n, 1e-6)
	compare(t, "AddRMSNorm out", g, c, dst, tolReduce)
	compare(t, "AddRMSNorm residual", g, c, x, tolElem)

	const heads, hd = 5, 200 // n = heads·hd
	pos := []int32{0, 1, 17, 255, 1000, 4095, 100000}
	inv := make([]float32, hd/2)
	for j := range inv {
		inv[j] = float32(math.Pow(10000, -2*float64(j)/hd))
	}
	g.RoPE(y.g, m, heads, hd, pos, inv)
	c.RoPE(y.c, m, heads, hd, pos, inv)
	compare(t, "RoPE", g, c, y, 1e-4) // large angles: sincosf vs float64 sincos

	rowsIdx := []int32{6, 0, 3, 3}
	gd := load(g, c, make([]float32, len(rowsIdx)*n))
	g.Gather(gd.g, x.g, rowsIdx, n)
	c.Gather(gd.c, x.c, rowsIdx, n)
	compare(t, "Gather", g, c, gd, 0)
}

func TestGPUMatMulAndEmbed(t *testing.T) {
	g, c := pair(t)
	r := rand.New(rand.NewPCG(3, 4))
	for _, dt := range []compute.DType{compute.F32, compute.BF16, compute.F16} {
		for _, sh := range [][3]int{{1, 4096, 512}, {5, 300, 77}, {64, 1024, 2048}} {
			m, rows, cols := sh[0], sh[1], sh[2]
			t.Run(fmt.Sprintf("%v/%dx%dx%d", dt, m, rows, cols), func(t *testing.T) {
				data := encode(dt, randVec(r, rows*cols))
				gw, err := g.LoadMat(dt, rows, cols, data)
				if err != nil {
					t.Fatal(err)
				}
				cw, err := c.LoadMat(dt, rows, cols, data)
				if err != nil {
					t.Fatal(err)
				}
				x := load(g, c, randVec(r, m*cols))
				dst := load(g, c, make([]float32, m*rows))
				g.MatMul(dst.g, x.g, gw, m)
				c.MatMul(dst.c, x.c, cw, m)
				// Scale the tolerance by √cols: the sums have cols terms of
				// unit variance.
				tol := map[compute.DType]float64{compute.F32: tolF32MM, compute.BF16: tolBF16MM, compute.F16: tolF16MM}[dt]
				compare(t, "MatMul", g, c, dst, tol*math.Sqrt(float64(cols)))

				ids := []int32{0, int32(rows - 1), 3, 3}
				e := load(g, c, make([]float32, len(ids)*cols))
				g.Embed(e.g, gw, ids)
				c.Embed(e.c, cw, ids)
				compare(t, "Embed", g, c, e, 0)
			})
		}
	}
}

func TestGPUAttention(t *testing.T) {
	g, c := pair(t)
	r := rand.New(rand.NewPCG(5, 6))
	for _, geo := range []struct {
		heads, kvHeads, hd, bs int
		dt                     compute.DType
	}{{4, 4, 64, 16, compute.F32}, {8, 2, 128, 16, compute.F32}, {4, 1, 256, 32, compute.F32}, {6, 3, 80, 8, compute.F32},
		{4, 4, 64, 16, compute.BF16}, {6, 3, 80, 8, compute.BF16}} {
		for _, lens := range [][][2]int{
			{{0, 1}},                     // first decode token
			{{37, 1}, {2, 1}, {300, 1}},  // decode batch
			{{5000, 1}},                  // long decode: split-K
			{{0, 40}},                    // prefill
			{{0, 33}, {20, 5}, {100, 1}}, // prefill, chunked prefill, decode mixed
		} {
			name := fmt.Sprintf("%v/h%d-kv%d-d%d-bs%d/%v", geo.dt, geo.heads, geo.kvHeads, geo.hd, geo.bs, lens)
			t.Run(name, func(t *testing.T) {
				spec := compute.AttnSpec{Heads: geo.heads, KVHeads: geo.kvHeads, HeadDim: geo.hd, Scale: float32(1 / math.Sqrt(float64(geo.hd)))}
				blocksNeeded := 0
				for _, l := range lens {
					blocksNeeded += (l[0] + l[1] + geo.bs - 1) / geo.bs
				}
				kvs := compute.KVSpec{Layers: 2, NumBlocks: blocksNeeded + 3, BlockSize: geo.bs, KVHeads: geo.kvHeads, HeadDim: geo.hd, DType: geo.dt}
				gc, err := g.NewKVCache(kvs)
				if err != nil {
					t.Fatal(err)
				}
				cc, err := c.NewKVCache(kvs)
				if err != nil {
					t.Fatal(err)
				}
				// Blocks handed out in a shuffled order, as a pool does.
				perm := r.Perm(kvs.NumBlocks)
				var seqs []compute.AttnSeq
				var slots []int32
				row := 0
				kvw := geo.kvHeads * geo.hd
				const layer = 1
				for _, l := range lens {
					pos, qlen := l[0], l[1]
					nb := (pos + qlen + geo.bs - 1) / geo.bs
					bl := make([]int32, nb)
					for i := range bl {
						bl[i] = int32(perm[0])
						perm = perm[1:]
					}
					// Every position's keys and values, past and present.
					var ss []int32
					for p := range pos + qlen {
						ss = append(ss, bl[p/geo.bs]*int32(geo.bs)+int32(p%geo.bs))
					}
					k := load(g, c, randVec(r, len(ss)*kvw))
					v := load(g, c, randVec(r, len(ss)*kvw))
					g.KVWrite(gc, layer, k.g, v.g, ss)
					c.KVWrite(cc, layer, k.c, v.c, ss)
					seqs = append(seqs, compute.AttnSeq{QRow: row, QLen: qlen, Pos: pos, Blocks: bl})
					slots = append(slots, ss...)
					row += qlen
				}
				q := load(g, c, randVec(r, row*geo.heads*geo.hd))
				dst := load(g, c, make([]float32, row*geo.heads*geo.hd))
				g.Attention(dst.g, q.g, gc, layer, seqs, spec)
				c.Attention(dst.c, q.c, cc, layer, seqs, spec)
				compare(t, "Attention", g, c, dst, tolAttn)

				// KVRead of the GPU equals the CPU's; KVLoad round-trips.
				h0, h1 := 0, geo.kvHeads
				if geo.kvHeads > 1 {
					h0 = 1
				}
				n := 2 * len(slots) * (h1 - h0) * geo.hd * geo.dt.Size()
				gr, cr := make([]byte, n), make([]byte, n)
				g.KVRead(gc, layer, slots, h0, h1, gr)
				c.KVRead(cc, layer, slots, h0, h1, cr)
				if !slices.Equal(gr, cr) {
					t.Error("KVRead differs from the CPU backend's")
				}
				for i := geo.dt.Size() - 1; i < len(gr); i += geo.dt.Size() {
					gr[i] ^= 0x80 // flip the sign of every element (little-endian: the last byte holds it)
				}
				g.KVLoad(gc, 0, slots, h0, h1, gr)
				back := make([]byte, n)
				g.KVRead(gc, 0, slots, h0, h1, back)
				if !slices.Equal(back, gr) {
					t.Error("KVLoad then KVRead does not round-trip")
				}
			})
		}
	}
}

func TestGPUSampling(t *testing.T) {
	g, c := pair(t)
	r := rand.New(rand.NewPCG(7, 8))
	const m, n = 5, 50000
	v := randVec(r, m*n)
	v[3*n+777] = 100 // a clear winner
	v[4*n+10], v[4*n+20] = 50, 50
	x := load(g, c, v)
	ids := make([]int32, m)
	if err := g.ArgMax(ids, x.g, m, n); err != nil {
		t.Fatal(err)
	}
	for i := range m {
		want := int32(0)
		for j := range n {
			if v[i*n+j] > v[i*n+int(want)] {
				want = int32(j)
			}
		}
		if ids[i] != want {
			t.Errorf("row %d: argmax %d, want %d", i, ids[i], want)
		}
	}
	// Temperature 0 is greedy; a tiny temperature picks the winner; at
	// temperature 1 the draw lands on a token of positive probability.
	temps := []float32{0, 1e-3, 1, 1, 1}
	us := []float32{0.5, 0.5, 0, 0.999, 0.5}
	if err := g.Sample(ids, x.g, m, n, temps, us); err != nil {
		t.Fatal(err)
	}
	if ids[3] != 777 {
		t.Errorf("row 3 drew %d, want 777 (probability ~1)", ids[3])
	}
	for i, id := range ids {
		if id < 0 || id >= n {
			t.Errorf("row %d drew %d", i, id)
		}
	}
}

// The whole tiny model, greedy, token for token the same as on the CPU.
func TestGPUGreedyTinyModel(t *testing.T) {
	g, c := pair(t)
	ctx := context.Background()
	dir, err := preset.Ensure(ctx, "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	run := func(be compute.Backend) []int32 {
		m, err := engine.Open(dir, be, engine.Shard{TP: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		e, err := engine.New(m, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Shutdown(ctx)
		prompt := []int32{1, 15, 27, 300, 42, 7, 99, 100, 5, 6, 7, 8}
		if err := e.Add(engine.Request{ID: "r", Prompt: prompt, Params: engine.SamplingParams{MaxTokens: 24, IgnoreEOS: true}}); err != nil {
			t.Fatal(err)
		}
		var out []int32
		for e.HasWork() {
			outs, err := e.Step(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range outs {
				out = append(out, o.Token)
			}
		}
		return out
	}
	want, got := run(c), run(g)
	if !slices.Equal(got, want) {
		t.Errorf("greedy tokens differ:\n gpu %v\n cpu %v", got, want)
	}
}

// The ceilings the benchmarks are held against, within what any GPU of
// this decade reaches: a copy between 100 GB/s and 20 TB/s, a BF16
// product between 1 and 5000 TFLOP/s.
func TestGPUMeasureCeilings(t *testing.T) {
	g, _ := pair(t)
	bw, err := g.MeasureCopyBandwidth(256 << 20)
	if err != nil {
		t.Fatal(err)
	}
	flops, err := g.MeasureMatMulFLOPS(4096)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("device copy %.0f GB/s (read + write), BF16 MatMul 4096³ %.1f TFLOP/s", bw/1e9, flops/1e12)
	if bw < 100e9 || bw > 20e12 {
		t.Errorf("copy bandwidth %.3g B/s is not plausible", bw)
	}
	if flops < 1e12 || flops > 5e15 {
		t.Errorf("BF16 MatMul rate %.3g FLOP/s is not plausible", flops)
	}
}
