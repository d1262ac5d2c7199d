package cuda

import (
	"fmt"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
)

// kvCache holds keys and values of every layer as float32 or bfloat16
// (spec.DType), laid out [layer][block][kvHead][slot][headDim] like the
// CPU backend's.
type kvCache struct {
	spec        compute.KVSpec
	k, v        uintptr
	layerStride int64 // values per layer
}

func (c *kvCache) Layers() int    { return c.spec.Layers }
func (c *kvCache) NumBlocks() int { return c.spec.NumBlocks }
func (c *kvCache) BlockSize() int { return c.spec.BlockSize }
func (c *kvCache) KVHeads() int   { return c.spec.KVHeads }
func (c *kvCache) HeadDim() int   { return c.spec.HeadDim }
func (c *kvCache) DType() compute.DType {
	return c.spec.DType
}

// kernel is k's form for the cache's dtype: its *_bf16 twin, which the
// launch table lists right after it, for a BF16 cache.
func (c *kvCache) kernel(k kernel) kernel {
	if c.spec.DType == compute.BF16 {
		return k + 1
	}
	return k
}

func (c *kvCache) slots() int { return c.spec.NumBlocks * c.spec.BlockSize }

func kvOf(c compute.KVCache) *kvCache {
	kc, ok := c.(*kvCache)
	if !ok {
		panic(fmt.Sprintf("cuda: KV cache of type %T does not belong to a CUDA backend", c))
	}
	return kc
}

// AutoKVDType is BF16 whatever the weights: the attention kernels are
// bound by reading the cache, which BF16 halves, and accumulate in fp32.
func (b *Backend) AutoKVDType(compute.DType) compute.DType { return compute.BF16 }

// NewKVCache allocates a zeroed F32 or BF16 cache.
func (b *Backend) NewKVCache(s compute.KVSpec) (compute.KVCache, error) {
	if s.Layers <= 0 || s.NumBlocks <= 0 || s.BlockSize <= 0 || s.KVHeads <= 0 || s.HeadDim <= 0 {
		return nil, fmt.Errorf("cuda: invalid KV cache spec %+v", s)
	}
	if s.DType != compute.F32 && s.DType != compute.BF16 {
		return nil, fmt.Errorf("%w: KV cache dtype %v (F32 or BF16)", compute.ErrUnsupported, s.DType)
	}
	if s.HeadDim > maxHeadDim {
		return nil, fmt.Errorf("%w: head dimension %d (the attention kernels take at most %d)", compute.ErrUnsupported, s.HeadDim, maxHeadDim)
	}
	per := int64(s.NumBlocks) * int64(s.BlockSize) * int64(s.KVHeads) * int64(s.HeadDim)
	total := per * int64(s.Layers)
	if total/int64(s.Layers) != per || total > 1<<40 || int64(s.NumBlocks)*int64(s.BlockSize) > 1<<31-1 {
		return nil, fmt.Errorf("cuda: KV cache spec %+v overflows", s)
	}
	if !b.enter() {
		b.leave()
		return nil, b.Err()
	}
	defer b.leave()
	c := &kvCache{spec: s, layerStride: per}
	var err error
	d := b.libs.drv
	bytes := total * int64(s.DType.Size())
	for _, p := range []*uintptr{&c.k, &c.v} {
		if *p, err = b.malloc(int(bytes)); err != nil {
			return nil, err
		}
		if err = d.check("cuMemsetD8Async", d.memsetD8Async(*p, 0, uint(bytes), b.stream)); err != nil {
			return nil, err
		}
	}
	return c, b.sync()
}

func checkSlots(op string, c *kvCache, slots []int32) {
	for _, s := range slots {
		if s < 0 || int(s) >= c.slots() {
			panic(fmt.Sprintf("cuda: %s slot %d out of range [0, %d)", op, s, c.slots()))
		}
	}
}

// KVWrite stores m rows of keys and values of one layer at slots.
func (b *Backend) KVWrite(c compute.KVCache, layer int, k, v compute.Buf, slots []int32) {
	kc, kb, vb := kvOf(c), bufOf(k), bufOf(v)
	s := kc.spec
	checkSlots("KVWrite", kc, slots)
	w := s.KVHeads * s.HeadDim
	need("KVWrite keys", kb, len(slots)*w)
	need("KVWrite values", vb, len(slots)*w)
	if layer < 0 || layer >= s.Layers {
		panic(fmt.Sprintf("cuda: KVWrite layer %d of %d", layer, s.Layers))
	}
	if !b.enter() || len(slots) == 0 {
		b.leave()
		return
	}
	defer b.leave()
	p, err := b.put(int32Bytes(slots))
	if err != nil {
		b.fail(err)
		return
	}
	b.launch(kc.kernel(kKVWrite), rows(len(slots)), 128, 0, ptrArg(kc.k), ptrArg(kc.v), ptrArg(kb.ptr), ptrArg(vb.ptr), ptrArg(p),
		i32Arg(len(slots)), i32Arg(s.KVHeads), i32Arg(s.HeadDim), i32Arg(s.BlockSize), i64Arg(int64(layer)*kc.layerStride))
}

// attnPlan is the host side of one Attention call: the arrays the kernels
// read, and which kernel runs.
type attnPlan struct {
	seqs   []int32 // 4 per sequence: QRow, QLen, Pos, offset in blocks
	blocks []int32 // every sequence's block table, concatenated
	work   []int32 // 2 per work item: sequence, row (decode) or first row (prefill)
	decode bool
	splits int
	maxLen int // longest context of any query row
}

// planAttention decides how to run a batch. A batch of single-row
// sequences (decode) takes attn_decode, one block per (row, head, split);
// splits grow until the grid fills the GPU about twice over, so one long
// sequence still uses every SM. Anything with a longer query takes the
// tiled attn_prefill, PF_BQ rows per tile.
func planAttention(seqs []compute.AttnSeq, heads, sms int) attnPlan {
	var p attnPlan
	p.decode = true
	for _, s := range seqs {
		if s.QLen != 1 {
			p.decode = false
		}
	}
	for i, s := range seqs {
		p.seqs = append(p.seqs, int32(s.QRow), int32(s.QLen), int32(s.Pos), int32(len(p.blocks)))
		p.blocks = append(p.blocks, s.Blocks...)
		p.maxLen = max(p.maxLen, s.Pos+s.QLen)
		step := 1
		if !p.decode {
			step = prefillBQ
		}
		for r := 0; r < s.QLen; r += step {
			p.work = append(p.work, int32(i), int32(r))
		}
	}
	p.splits = 1
	if p.decode {
		items := len(p.work) / 2 * heads
		const minKeysPerSplit = 256 // fewer, and merging costs more than it saves
		for p.splits < 64 && items*p.splits < 2*sms && p.maxLen/(2*p.splits) >= minKeysPerSplit {
			p.splits *= 2
		}
	}
	return p
}

// Attention runs causal paged attention of each sequence's query rows.
func (b *Backend) Attention(dst, q compute.Buf, c compute.KVCache, layer int, seqs []compute.AttnSeq, spec compute.AttnSpec) {
	kc, db, qb := kvOf(c), bufOf(dst), bufOf(q)
	s := kc.spec
	if spec.HeadDim != s.HeadDim || spec.KVHeads != s.KVHeads || spec.KVHeads <= 0 || spec.Heads%spec.KVHeads != 0 {
		panic(fmt.Sprintf("cuda: Attention spec %+v does not fit cache %+v", spec, s))
	}
	qw := spec.Heads * spec.HeadDim
	for _, sq := range seqs {
		if sq.Pos+sq.QLen > len(sq.Blocks)*s.BlockSize {
			panic(fmt.Sprintf("cuda: Attention over positions [0, %d) with %d blocks of %d", sq.Pos+sq.QLen, len(sq.Blocks), s.BlockSize))
		}
		for _, bl := range sq.Blocks {
			if bl < 0 || int(bl) >= s.NumBlocks {
				panic(fmt.Sprintf("cuda: Attention block %d out of range [0, %d)", bl, s.NumBlocks))
			}
		}
		need("Attention q", qb, (sq.QRow+sq.QLen)*qw)
		need("Attention dst", db, (sq.QRow+sq.QLen)*qw)
	}
	p := planAttention(seqs, spec.Heads, b.dev.sms)
	if !b.enter() || len(p.work) == 0 {
		b.leave()
		return
	}
	defer b.leave()
	var ptrs [3]uintptr
	for i, a := range [][]int32{p.seqs, p.blocks, p.work} {
		var err error
		if ptrs[i], err = b.put(int32Bytes(a)); err != nil {
			b.fail(err)
			return
		}
	}
	sp, bp, wp := ptrs[0], ptrs[1], ptrs[2]
	items := len(p.work) / 2
	lo := i64Arg(int64(layer) * kc.layerStride)
	hd := spec.HeadDim
	if !p.decode {
		b.launch(kc.kernel(kAttnPrefill), [3]int{items, spec.Heads, 1}, prefillThreads, prefillShared(hd),
			ptrArg(db.ptr), ptrArg(qb.ptr), ptrArg(kc.k), ptrArg(kc.v), ptrArg(sp), ptrArg(bp), ptrArg(wp),
			i32Arg(spec.Heads), i32Arg(spec.KVHeads), i32Arg(hd), i32Arg(s.BlockSize), lo, f32Arg(spec.Scale))
		return
	}
	var part uintptr
	if p.splits > 1 {
		var err error
		if part, err = b.grow(&b.part, 4*items*spec.Heads*p.splits*(hd+2), b.stream); err != nil {
			b.fail(err)
			return
		}
	}
	b.launch(kc.kernel(kAttnDecode), [3]int{items, spec.Heads, p.splits}, decodeThreads, 0,
		ptrArg(db.ptr), ptrArg(part), ptrArg(qb.ptr), ptrArg(kc.k), ptrArg(kc.v), ptrArg(sp), ptrArg(bp), ptrArg(wp),
		i32Arg(spec.Heads), i32Arg(spec.KVHeads), i32Arg(hd), i32Arg(s.BlockSize), lo, f32Arg(spec.Scale), i32Arg(p.splits))
	if p.splits > 1 {
		b.launch(kAttnCombine, [3]int{items, spec.Heads, 1}, 128, 0,
			ptrArg(db.ptr), ptrArg(part), ptrArg(sp), ptrArg(wp), i32Arg(spec.Heads), i32Arg(hd), i32Arg(p.splits))
	}
}

// KVRead copies keys then values of heads [h0, h1) at slots into dst, in
// the cache's dtype (the GPU's byte order is little-endian, as the host's).
func (b *Backend) KVRead(c compute.KVCache, layer int, slots []int32, h0, h1 int, dst []byte) {
	b.kvCopy(kvOf(c), layer, slots, h0, h1, dst, false)
}

// KVLoad stores keys then values of heads [h0, h1) at slots from src.
func (b *Backend) KVLoad(c compute.KVCache, layer int, slots []int32, h0, h1 int, src []byte) {
	b.kvCopy(kvOf(c), layer, slots, h0, h1, src, true)
}

// kvCopy runs on the KV side's own stream, launch memory and buffers, so
// it may overlap ops on another goroutine. It first waits for the ops
// already issued (so a layer the engine marked done is written), and is
// synchronous: host memory is read or written before it returns.
func (b *Backend) kvCopy(kc *kvCache, layer int, slots []int32, h0, h1 int, host []byte, load bool) {
	s := kc.spec
	heads := h1 - h0
	if h0 < 0 || h1 > s.KVHeads || heads <= 0 || len(host) != 2*len(slots)*heads*s.HeadDim*s.DType.Size() || layer < 0 || layer >= s.Layers {
		panic(fmt.Sprintf("cuda: KV copy of layer %d heads [%d,%d) for %d slots into %d bytes does not fit cache %+v", layer, h0, h1, len(slots), len(host), s))
	}
	checkSlots("KV copy", kc, slots)
	if len(slots) == 0 {
		return
	}
	b.kv.mu.Lock()
	defer b.kv.mu.Unlock()
	if !b.enter() {
		b.leave()
		panic(fmt.Sprintf("cuda: KV copy: %v", b.Err()))
	}
	defer b.leave()
	if err := b.kvCopyLocked(kc, layer, slots, h0, heads, host, load); err != nil {
		b.fail(err)
		panic(fmt.Sprintf("cuda: KV copy: %v", err))
	}
}

func (b *Backend) kvCopyLocked(kc *kvCache, layer int, slots []int32, h0, heads int, host []byte, load bool) error {
	s, d, st := kc.spec, b.libs.drv, b.kv.stream
	sp, err := b.grow(&b.kv.slots, 4*len(slots), st)
	if err != nil {
		return err
	}
	bp, err := b.grow(&b.kv.buf, len(host), st)
	if err != nil {
		return err
	}
	// Order the copy after every op issued so far on the ops' stream.
	if err := d.check("cuEventRecord", d.eventRecord(b.kv.ready, b.stream)); err != nil {
		return err
	}
	if err := d.check("cuStreamWaitEvent", d.streamWaitEvent(st, b.kv.ready, 0)); err != nil {
		return err
	}
	// Pageable host memory: each copy returns once the driver has staged
	// (or, device to host, delivered) the bytes.
	if err := d.check("cuMemcpyHtoDAsync_v2", d.memcpyHtoDAsync(sp, unsafe.Pointer(&slots[0]), uint(4*len(slots)), st)); err != nil {
		return err
	}
	if load {
		if err := d.check("cuMemcpyHtoDAsync_v2", d.memcpyHtoDAsync(bp, unsafe.Pointer(&host[0]), uint(len(host)), st)); err != nil {
			return err
		}
	}
	k, first, second := kc.kernel(kKVPack), bp, kc.k
	third := kc.v
	if load {
		k, first, second, third = kc.kernel(kKVUnpack), kc.k, kc.v, bp
	}
	err = b.launchOn(st, b.kv.args, k, rows(len(slots)), 128, 0, ptrArg(first), ptrArg(second), ptrArg(third), ptrArg(sp),
		i32Arg(len(slots)), i32Arg(h0), i32Arg(heads), i32Arg(s.KVHeads), i32Arg(s.HeadDim), i32Arg(s.BlockSize), i64Arg(int64(layer)*kc.layerStride))
	if err != nil {
		return err
	}
	if !load {
		if err := d.check("cuMemcpyDtoHAsync_v2", d.memcpyDtoHAsync(unsafe.Pointer(&host[0]), bp, uint(len(host)), st)); err != nil {
			return err
		}
	}
	return d.check("cuStreamSynchronize", d.streamSynchronize(st))
}
