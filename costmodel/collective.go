package costmodel

import (
	"math"
	"math/bits"
)

// NCCL's tuning model (src/graph/tuning.cc, NCCL 2.18-2.19): a collective
// of S bytes on algorithm a with protocol p takes
//
//	latency(a, p) + S / algorithmBandwidth(a, p)
//
// and NCCL runs the (a, p) predicted fastest. The latencies below are
// that file's baseLat and hwLat tables in seconds; the bandwidth factors
// its "model refinements". Left out: per-channel caps, NVLS and CollNet
// (NVLink SHARP and in-network reduction) and the tree correction table;
// the calibration's CollectiveBandwidth and CollectiveLatency absorb them.
const (
	protoLL = iota
	protoLL128
	protoSimple
	numProtos
)

const (
	algoTree = iota
	algoRing
	numAlgos
)

var (
	ncclBaseLat = [numAlgos][numProtos]float64{
		algoTree: {6.8e-6, 14.0e-6, 0},
		algoRing: {6.6e-6, 14.0e-6, 8.4e-6},
	}
	ncclHopLat = map[string][numAlgos][numProtos]float64{
		ClassNVLink: {algoTree: {0.6e-6, 1.25e-6, 28e-6}, algoRing: {0.6e-6, 1.9e-6, 3.4e-6}},
		ClassPCI:    {algoTree: {1.0e-6, 1.9e-6, 28e-6}, algoRing: {1.0e-6, 2.5e-6, 5.7e-6}},
		ClassNet:    {algoTree: {5.0e-6, 8.5e-6, 28e-6}, algoRing: {2.7e-6, 4.0e-6, 14.0e-6}},
	}
)

// tcpSmallMessage is nccl/ring's Options.SmallMessageBytes default: an
// allreduce of at most this many bytes takes recursive doubling.
const tcpSmallMessage = 64 << 10

// Span is where a collective's ranks sit: N ranks over Nodes nodes.
type Span struct{ N, Nodes int }

// collectives prices the collectives of one group on one hardware.
type collectives struct {
	hw           Hardware
	intra, inter Link
	eff          Efficiency
}

// RingAllReduce is NCCL's ring with the Simple protocol: 2(n−1) steps,
// each crossing one hop, moving 2(n−1)/n of the buffer per rank.
func (c collectives) RingAllReduce(s Span, bytes float64) float64 {
	return c.ncclAllReduce(s, bytes, algoRing, protoSimple)
}

// TreeAllReduce is NCCL's double binary tree with the Simple protocol.
func (c collectives) TreeAllReduce(s Span, bytes float64) float64 {
	return c.ncclAllReduce(s, bytes, algoTree, protoSimple)
}

// AllReduce is the time of an allreduce of bytes (each rank's buffer).
func (c collectives) AllReduce(s Span, bytes float64) float64 {
	if s.N <= 1 {
		return 0
	}
	if c.hw.Kind == KindCPU && c.intra.SharedMemory {
		return c.shmAllReduce(s.N, bytes)
	}
	if c.hw.Kind == KindCPU {
		return c.tcpAllReduce(s.N, bytes)
	}
	best := math.Inf(1)
	for a := range numAlgos {
		for p := range numProtos {
			if t := c.ncclAllReduce(s, bytes, a, p); t < best {
				best = t
			}
		}
	}
	return best
}

// ncclAllReduce is NCCL's predicted time of one (algorithm, protocol),
// +Inf where NCCL would not enable it.
func (c collectives) ncclAllReduce(s Span, bytes float64, a, p int) float64 {
	n, nodes := float64(s.N), max(1, s.Nodes)
	intraClass := c.intra.Class
	if p == protoLL128 && intraClass != ClassNVLink {
		return math.Inf(1) // NCCL enables LL128 by default on NVLink only
	}
	bus := c.intra.Bandwidth
	if nodes > 1 {
		bus = min(bus, c.inter.Bandwidth)
	}
	bus *= c.eff.CollectiveBandwidth
	switch {
	case a == algoRing && p == protoLL:
		bus /= 4
	case a == algoRing && p == protoLL128:
		bus *= 0.92
	case a == algoTree:
		bus *= 0.92
		switch p {
		case protoLL:
			bus /= 3.8
		case protoLL128:
			if nodes == 1 {
				bus *= 7.0 / 9
			} else {
				bus *= 120.0 / 128
			}
		}
	}
	intraLat := ncclHopLat[intraClass][a][p]
	interLat := ncclHopLat[ClassNet][a][p] + c.inter.Latency
	lat := ncclBaseLat[a][p]
	var alg float64
	if a == algoRing {
		steps := 2 * (n - 1)
		inter := 0.0
		if nodes > 1 {
			inter = 2 * float64(nodes)
		}
		lat += (steps-inter)*intraLat + inter*interLat
		alg = bus * n / steps
	} else {
		lat += 2 * ((n/float64(nodes)-1)*intraLat + math.Log2(float64(nodes))*interLat)
		alg = bus * 0.5
	}
	return lat*c.eff.CollectiveLatency + bytes/alg
}

// AllGather is the time of an all-gather of bytes per rank: NCCL's ring
// (n−1 steps) on GPUs; on CPUs nccl/ring sends each rank's part straight
// to every peer.
func (c collectives) AllGather(s Span, bytes float64) float64 {
	if s.N <= 1 {
		return 0
	}
	if c.hw.Kind == KindCPU {
		alpha, beta := c.tcp()
		return alpha + float64(s.N-1)*bytes/beta
	}
	return c.ncclRingOnce(s, float64(s.N-1), float64(s.N-1)*bytes)
}

// Broadcast is the time of a broadcast of bytes from rank 0.
func (c collectives) Broadcast(s Span, bytes float64) float64 {
	if s.N <= 1 {
		return 0
	}
	if c.hw.Kind == KindCPU {
		alpha, beta := c.tcp()
		return alpha + float64(s.N-1)*bytes/beta
	}
	return c.ncclRingOnce(s, 1, bytes)
}

// ncclRingOnce is a Simple-protocol ring collective of `hops` hop
// latencies that moves `wire` bytes through each rank's link.
func (c collectives) ncclRingOnce(s Span, hops, wire float64) float64 {
	bus := c.intra.Bandwidth
	hop := ncclHopLat[c.intra.Class][algoRing][protoSimple]
	if s.Nodes > 1 {
		bus = min(bus, c.inter.Bandwidth)
		hop = ncclHopLat[ClassNet][algoRing][protoSimple] + c.inter.Latency
	}
	lat := ncclBaseLat[algoRing][protoSimple] + hops*hop
	return lat*c.eff.CollectiveLatency + wire/(bus*c.eff.CollectiveBandwidth)
}

// tcpAllReduce is nccl/ring over TCP: up to 64 KiB recursive doubling
// (whole-buffer exchanges in a row, doublingSteps); beyond, a ring of n−1
// reduce-scatter and n−1 all-gather steps, each a latency and a 1/n
// chunk.
func (c collectives) tcpAllReduce(n int, bytes float64) float64 {
	alpha, beta := c.tcp()
	if bytes <= tcpSmallMessage || bytes < float64(4*n) {
		return float64(doublingSteps(n)) * (alpha + bytes/beta)
	}
	return 2 * float64(n-1) * (alpha + bytes/float64(n)/beta)
}

// Constants of nccl/ring's shared-memory allreduce (nccl/ring/shm.go).
const (
	shmSlotBytes  = 512 << 10
	shmSmallReads = 256 << 10
)

// shmAllReduce is nccl/ring between processes of one machine: the buffer
// goes in slot-sized steps, each one barrier where the n copies fit 256
// KiB (every rank sums every slot), else two (each rank sums its 1/n,
// then copies the others'). Each rank copies its buffer in and the sums
// out: 2+n+1 buffers of reads and writes a rank on the one-barrier path;
// 5−1/n on the other, where a rank's own 1/n stays in its buffer. A barrier costs the profile's latency while every
// rank has a core, and each rank beyond the cores adds as much again (it
// waits for the scheduler); the bytes move at the ranks' combined rate.
func (c collectives) shmAllReduce(n int, bytes float64) float64 {
	ranks := float64(n)
	steps := max(1, math.Ceil(bytes/shmSlotBytes))
	barriers, moved := 2*steps, (5-1/ranks)*bytes
	if bytes <= shmSlotBytes && bytes*ranks <= shmSmallReads {
		barriers, moved = steps, (3+ranks)*bytes
	}
	lat := c.hw.SharedMemoryLatency * max(1, ranks-float64(max(1, c.hw.Cores))+1)
	return barriers*lat*c.eff.CollectiveLatency + ranks*moved/(c.hw.SharedMemoryBandwidth*c.eff.CollectiveBandwidth)
}

// doublingSteps is the whole-buffer exchanges in a row of nccl/ring's
// recursive doubling over n ranks: log2 p for the largest power of two p
// <= n, and where n is not one, the extra ranks' fold in and the result's
// trip back.
func doublingSteps(n int) int {
	steps := bits.Len(uint(n)) - 1
	if n&(n-1) != 0 {
		steps += 2
	}
	return steps
}

// tcp is the latency and bandwidth of one TCP message between two ranks:
// the link's plus the host stack's latency, the smaller bandwidth.
func (c collectives) tcp() (alpha, beta float64) {
	alpha = (c.intra.Latency + c.hw.NetworkLatency) * c.eff.CollectiveLatency
	beta = c.hw.NetworkBandwidth
	if c.intra.Bandwidth > 0 {
		beta = min(beta, c.intra.Bandwidth)
	}
	return alpha, beta * c.eff.CollectiveBandwidth
}
