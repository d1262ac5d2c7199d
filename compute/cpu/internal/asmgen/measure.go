package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// readStreams generates read4<ISA>(p *byte, n int, ahead int): reads n
// bytes (rounded down to 4·128) as four streams, one per quarter, 128
// bytes of each per iteration, prefetching each stream ahead bytes ahead:
// the access pattern of a decode tile kernel, which reads four weight rows
// at once and prefetches the next tile. A single sequential stream leaves
// the memory system less to overlap and can read slower than the kernels
// it is meant to bound.
func readStreams(is isa) {
	name := "read4" + is.name
	TEXT(name, NOSPLIT, "func(p *byte, n int, ahead int)")
	Pragma("noescape")
	Doc(name + " streams n bytes from p into registers as four streams (see readStreams in the generator).")
	p := Load(Param("p"), GP64())
	n := Load(Param("n"), GP64())
	ahead := Load(Param("ahead"), GP64())
	q := GP64()
	MOVQ(n, q)
	SHRQ(U8(2), q)
	ANDQ(I32(^127), q)
	q3 := GP64()
	LEAQ(Mem{Base: q, Index: q, Scale: 2}, q3)
	iters := GP64()
	MOVQ(q, iters)
	SHRQ(U8(7), iters)
	JZ(LabelRef(name + "_done"))
	pf := GP64()
	LEAQ(Mem{Base: p, Index: ahead, Scale: 1}, pf)
	bytes := 4 * is.lanes
	regs := make([]reg.VecVirtual, 128/bytes)
	for i := range regs {
		regs[i] = is.vec()
	}
	Label(name + "_loop")
	for s := range 4 {
		for i, r := range regs {
			VMOVUPS(rowAddr(s, p, nil, q, q3).Offset(i*bytes), r)
		}
	}
	for s := range 4 {
		PREFETCHT0(rowAddr(s, pf, nil, q, q3))
		PREFETCHT0(rowAddr(s, pf, nil, q, q3).Offset(64))
	}
	ADDQ(U8(128), p)
	ADDQ(U8(128), pf)
	DECQ(iters)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// fmaChains is the number of independent FMA chains of fmaLoop: enough to
// cover a 4-cycle latency on two pipes with room to spare.
const fmaChains = 12

// fmaLoop generates fma<ISA>: iters iterations of fmaChains independent
// vector FMAs, for measuring peak FLOP/s.
func fmaLoop(is isa) {
	name := "fma" + is.name
	TEXT(name, NOSPLIT, "func(iters int)")
	Doc(fmt.Sprintf("%s runs iters×%d independent %d-lane FMAs.", name, fmaChains, is.lanes))
	n := Load(Param("iters"), GP64())
	a, b := is.vec(), is.vec()
	VXORPS(a, a, a)
	VXORPS(b, b, b)
	acc := make([]reg.VecVirtual, fmaChains)
	for i := range acc {
		acc[i] = is.vec()
		VXORPS(acc[i], acc[i], acc[i])
	}
	Label(name + "_loop")
	for _, c := range acc {
		VFMADD231PS(a, b, c)
	}
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	// Keep the chains live to the end so none is dropped as dead.
	for _, c := range acc[1:] {
		VADDPS(c, acc[0], acc[0])
	}
	VZEROUPPER()
	RET()
}
