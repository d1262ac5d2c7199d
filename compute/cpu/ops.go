package cpu

import (
	"fmt"
	"math"
	"slices"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/internal/half"
)

// rowOp names the row-parallel ops rowsTask runs.
type rowOp uint8

const (
	opEmbed rowOp = iota
	opAddBias
	opAdd
	opSiLUMul
	opGELU
	opRMSNorm
	opLayerNorm
	opRoPE
)

// parallelMin is the number of values below which an op runs on the
// calling goroutine alone: waking the pool costs more than the work.
const parallelMin = 1 << 14

// rowsTask runs one elementwise or per-row op over rows [lo, hi) per chunk.
// For elementwise ops a "row" is one value.
type rowsTask struct {
	op            rowOp
	dst, a, b     []float32
	w, bias       []float32
	n             int // values per row
	eps           float32
	mat           *mat
	ids           []int32
	heads, hd     int
	invFreq       []float32
	table         []float32 // RoPE's cosines and sines, hd per row (see ropeTable)
	fillTable     bool      // computed by this call
	rows, perTask int
	k             *kernels
}

// runRows dispatches t over rows rows of n values each.
func (b *Backend) runRows(op rowsTask, rows, n int) {
	t := &b.rows
	*t = op
	t.rows, t.n, t.k = rows, n, b.k
	chunks := 1
	if rows*n >= parallelMin && rows > 1 {
		chunks = min(rows, 4*b.threads, maxChunks)
	}
	t.perTask = (rows + chunks - 1) / chunks
	b.pool.run(t, (rows+t.perTask-1)/t.perTask)
	*t = rowsTask{}
}

func (t *rowsTask) run(c, _ int) {
	lo := c * t.perTask
	hi := min(lo+t.perTask, t.rows)
	n := t.n
	switch t.op {
	case opEmbed:
		for i := lo; i < hi; i++ {
			embedRow(t.dst[i*n:(i+1)*n], t.mat, t.ids[i])
		}
	case opAddBias:
		for i := lo; i < hi; i++ {
			row := t.dst[i*n : (i+1)*n]
			addF32(t.k, row, row, t.bias[:n])
		}
	case opAdd:
		addF32(t.k, t.dst[lo:hi], t.a[lo:hi], t.b[lo:hi])
	case opSiLUMul:
		if f := t.k.siluMul; f != nil && hi-lo >= t.k.lanes {
			v := (hi - lo) / t.k.lanes * t.k.lanes
			f(&t.dst[lo], &t.a[lo], &t.b[lo], v)
			lo += v
		}
		g, u := t.a[lo:hi], t.b[lo:hi]
		for j := range t.dst[lo:hi] {
			t.dst[lo+j] = g[j] / (1 + expf(-g[j])) * u[j]
		}
	case opGELU:
		if f := t.k.gelu; f != nil && hi-lo >= t.k.lanes {
			v := (hi - lo) / t.k.lanes * t.k.lanes
			f(&t.dst[lo], v)
			lo += v
		}
		for j, x := range t.dst[lo:hi] {
			t.dst[lo+j] = gelu(x)
		}
	case opRMSNorm:
		for i := lo; i < hi; i++ {
			rmsNormRow(t.k, t.dst[i*n:(i+1)*n], t.a[i*n:(i+1)*n], t.w[:n], t.eps)
		}
	case opLayerNorm:
		for i := lo; i < hi; i++ {
			layerNormRow(t.k, t.dst[i*n:(i+1)*n], t.a[i*n:(i+1)*n], t.w[:n], t.bias[:n], t.eps)
		}
	case opRoPE:
		for i := lo; i < hi; i++ {
			cs := t.table[i*t.hd : (i+1)*t.hd]
			if t.fillTable {
				ropeAngles(cs, t.ids[i], t.invFreq)
			}
			ropeRow(t.k, t.dst[i*n:(i+1)*n], t.heads, t.hd, cs)
		}
	}
}

// Embed: dst[i] = row ids[i] of w, as float32.
func (b *Backend) Embed(dst compute.Buf, w compute.Mat, ids []int32) {
	wm := matOf(w)
	for _, id := range ids {
		if id < 0 || int(id) >= wm.rows {
			panic(fmt.Sprintf("cpu: Embed id %d out of range [0, %d)", id, wm.rows))
		}
	}
	b.runRows(rowsTask{op: opEmbed, dst: data(dst), mat: wm, ids: ids}, len(ids), wm.cols)
}

func embedRow(dst []float32, w *mat, id int32) {
	off := int(id) * w.cols
	switch w.dtype {
	case compute.BF16:
		for j, h := range w.u16[off : off+w.cols] {
			dst[j] = half.BF16ToFloat32(h)
		}
		return
	case compute.F16:
		for j, h := range w.u16[off : off+w.cols] {
			dst[j] = half.F16ToFloat32(h)
		}
		return
	}
	copy(dst, w.f32[off:off+w.cols])
}

// Gather: dst[i] = src[rows[i]] for rows of n values.
func (b *Backend) Gather(dst, src compute.Buf, rows []int32, n int) {
	d, s := data(dst), data(src)
	for i, r := range rows {
		copy(d[i*n:(i+1)*n], s[int(r)*n:(int(r)+1)*n])
	}
}

// AddBias: x[i] += bias for m rows.
func (b *Backend) AddBias(x, bias compute.Buf, m int) {
	bs := data(bias)
	b.runRows(rowsTask{op: opAddBias, dst: data(x), bias: bs}, m, len(bs))
}

// Add: dst = a + b over n values.
func (b *Backend) Add(dst, x, y compute.Buf, n int) {
	b.runRows(rowsTask{op: opAdd, dst: data(dst)[:n], a: data(x)[:n], b: data(y)[:n]}, n, 1)
}

// SiLUMul: dst = silu(gate)·up over n values.
func (b *Backend) SiLUMul(dst, gate, up compute.Buf, n int) {
	b.runRows(rowsTask{op: opSiLUMul, dst: data(dst)[:n], a: data(gate)[:n], b: data(up)[:n]}, n, 1)
}

// GELU (tanh approximation) in place over n values.
func (b *Backend) GELU(x compute.Buf, n int) {
	b.runRows(rowsTask{op: opGELU, dst: data(x)[:n]}, n, 1)
}

// RMSNorm over m rows of n values.
func (b *Backend) RMSNorm(dst, x, w compute.Buf, m, n int, eps float32) {
	b.runRows(rowsTask{op: opRMSNorm, dst: data(dst), a: data(x), w: data(w), eps: eps}, m, n)
}

// LayerNorm over m rows of n values.
func (b *Backend) LayerNorm(dst, x, w, bias compute.Buf, m, n int, eps float32) {
	b.runRows(rowsTask{op: opLayerNorm, dst: data(dst), a: data(x), w: data(w), bias: data(bias), eps: eps}, m, n)
}

// RoPE rotates m rows of heads×headDim in place (rotate-half pairing).
func (b *Backend) RoPE(x compute.Buf, m, heads, headDim int, pos []int32, invFreq []float32) {
	if headDim%2 != 0 || len(invFreq) < headDim/2 || len(pos) < m {
		panic(fmt.Sprintf("cpu: RoPE headDim %d with %d frequencies and %d positions for %d rows",
			headDim, len(invFreq), len(pos), m))
	}
	fill := b.rope.reset(pos[:m], invFreq[:headDim/2], headDim)
	b.runRows(rowsTask{op: opRoPE, dst: data(x), heads: heads, hd: headDim, ids: pos, invFreq: invFreq,
		table: b.rope.cs, fillTable: fill}, m, heads*headDim)
}

// ropeTable holds the cosines and sines of the positions RoPE last
// rotated. Every layer of a step rotates the same positions, queries and
// keys alike, so the angles are computed once a step rather than twice a
// layer (math.Sincos took as long as the rotations).
type ropeTable struct {
	pos     []int32
	invFreq []float32
	hd      int
	cs      []float32 // hd per position: headDim/2 cosines, then the sines
}

// reset makes the table hold pos's angles and reports whether the caller
// must compute them (they are not those of the last call).
func (r *ropeTable) reset(pos []int32, invFreq []float32, hd int) bool {
	if r.hd == hd && slices.Equal(r.pos, pos) && slices.Equal(r.invFreq, invFreq) {
		return false
	}
	r.pos = append(r.pos[:0], pos...)
	r.invFreq = append(r.invFreq[:0], invFreq...)
	r.hd = hd
	grow(&r.cs, len(pos)*hd)
	return true
}

// gelu is GPT-2's tanh GELU, ½x(1+tanh u) with u = √(2/π)(x+0.044715x³),
// computed as x·σ(2u), which is the same function without tanh.
func gelu(x float32) float32 {
	const c = 0.7978845608028654 // sqrt(2/π)
	u := c * x * (1 + 0.044715*x*x)
	return x / (1 + expf(-2*u))
}

// rmsNormRow sets dst = x/√(mean(x²)+eps)·w, the variance in float32 as
// Hugging Face's LlamaRMSNorm computes it.
func rmsNormRow(k *kernels, dst, x, w []float32, eps float32) {
	_, ss := momentsF32(k, x, 0)
	variance := ss / float32(len(x))
	r := float32(1 / math.Sqrt(float64(variance+eps)))
	scaleMulF32(k, dst, x, w, r)
}

// layerNormRow sets dst = (x−mean)/√(var(x)+eps)·w + bias in two passes
// over x: its sum, then its moments about that mean (the second pass's
// Σ (x−mean) corrects the mean's rounding).
func layerNormRow(k *kernels, dst, x, w, bias []float32, eps float32) {
	n := float32(len(x))
	s, _ := momentsF32(k, x, 0)
	mean := s / n
	s, ss := momentsF32(k, x, mean)
	d := s / n
	variance := max(ss/n-d*d, 0)
	r := float32(1 / math.Sqrt(float64(variance+eps)))
	layerNormApplyF32(k, dst, x, w, bias, mean+d, r)
}

// ropeAngles sets cs to the cosines, then the sines, of position pos's
// angles. The angle is the float32 product pos·invFreq, as Hugging Face
// computes it.
func ropeAngles(cs []float32, pos int32, invFreq []float32) {
	half := len(cs) / 2
	for j := range half {
		s, c := math.Sincos(float64(float32(pos) * invFreq[j]))
		cs[j], cs[half+j] = float32(c), float32(s)
	}
}

// ropeRow rotates the heads of one row by the angles in cs (see
// ropeAngles).
func ropeRow(k *kernels, x []float32, heads, hd int, cs []float32) {
	half := hd / 2
	cos, sin := cs[:half], cs[half:hd]
	for h := range heads {
		v := x[h*hd : (h+1)*hd]
		rotateF32(k, v[:half], v[half:hd], cos, sin)
	}
}
