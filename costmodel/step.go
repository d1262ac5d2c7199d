package costmodel

import (
	"fmt"
)

// Model prices the steps of groups of one model on one hardware.
type Model struct {
	Shape Shape
	HW    Hardware
	// Intra joins the devices of a node, Inter the nodes.
	Intra, Inter Link
	Eff          Efficiency
	coll         collectives
	// host is the host link's bandwidth (0: the host is the device).
	host   float64
	shares map[int]rankShare
}

// New returns the cost model of shape on hw, with link between nodes
// (and, for hardware without its own intra-node link, such as CPU ranks
// in their own network namespaces, between ranks). A nil eff takes the
// hardware profile's priors.
func New(shape Shape, hw Hardware, link Link, eff *Efficiency) (*Model, error) {
	if err := hw.validate(); err != nil {
		return nil, err
	}
	if err := link.validate(); err != nil {
		return nil, err
	}
	intra := link
	if hw.IntraNodeLink != "" {
		l, err := LinkByName(hw.IntraNodeLink)
		if err != nil {
			return nil, fmt.Errorf("hardware %s: intra_node_link: %w", hw.Name, err)
		}
		intra = l
	}
	e := hw.Efficiency
	if eff != nil {
		e = *eff
	}
	if err := e.validate(); err != nil {
		return nil, err
	}
	m := &Model{Shape: shape, HW: hw, Intra: intra, Inter: link, Eff: e, shares: map[int]rankShare{}}
	m.coll = collectives{hw: hw, intra: intra, inter: link, eff: e}
	if hw.HostLink != "" {
		hl, err := LinkByName(hw.HostLink)
		if err != nil {
			return nil, fmt.Errorf("hardware %s: host_link: %w", hw.Name, err)
		}
		m.host = hl.Bandwidth
	}
	return m, nil
}

// Group is a tensor-parallel group as the cost model sees it.
type Group struct {
	TP int
	// Nodes the group spans: 1 unless TP exceeds a node's devices.
	Nodes int
}

// GroupOf places a TP-tp group on as few nodes as hold it.
func (m *Model) GroupOf(tp int) Group {
	return Group{TP: tp, Nodes: max(1, (tp+m.HW.GPUsPerNode-1)/m.HW.GPUsPerNode)}
}

// Rows is one sequence's part of a step: Rows query rows starting at
// position Pos (a prefill chunk, or one decode row), sampled when the
// chunk reaches the end of its tokens.
type Rows struct {
	Pos, Rows int
	Sample    bool
}

// StepCost is one step of a group, in seconds, as one rank spends it.
// Linear, Attention and LMHead are rooflines: the larger of bytes read
// over effective bandwidth and FLOPs over effective peak (their sum on a
// device with SerialMemoryCompute), for a rank
// with the device to itself (on a shared device the time stretches with
// the ranks busy beside it: see Compute).
type StepCost struct {
	Linear, Attention, LMHead float64
	// AllReduce is 2 allreduces per layer; Gather the logits all-gather;
	// Broadcast rank 0's step plan.
	AllReduce, Gather, Broadcast float64
	// Sampling is the logits' trip to the host and the host's sampling.
	Sampling float64
	// Overhead is the fixed per-step and per-layer cost.
	Overhead float64
	// AllReduceBytes is one rank's allreduce payload in the step (what the
	// flight recorder counts); Rows and Sampled the batch's rows.
	AllReduceBytes float64
	Rows, Sampled  int
}

// Compute is the part of the step that runs on the device.
func (c StepCost) Compute() float64 { return c.Linear + c.Attention + c.LMHead }

// Communication is the collectives' part.
func (c StepCost) Communication() float64 { return c.AllReduce + c.Gather + c.Broadcast }

// Total is the step's time on an unshared device.
func (c StepCost) Total() float64 {
	return c.Compute() + c.Communication() + c.Sampling + c.Overhead
}

// Step prices one step of group g over batch.
func (m *Model) Step(g Group, batch []Rows) (StepCost, error) {
	r, err := m.share(g.TP)
	if err != nil {
		return StepCost{}, err
	}
	s, e := m.Shape, m.Eff
	bw, peak := m.HW.MemoryBandwidth*e.Memory, m.computePeak()
	var c StepCost
	var kvTokens, pairs float64
	for _, b := range batch {
		n, p := float64(b.Rows), float64(b.Pos)
		c.Rows += b.Rows
		if b.Sample {
			c.Sampled++
		}
		kvTokens += p + 2*n // the context read, and the new rows written
		pairs += n*p + n*(n+1)/2
	}
	if c.Rows == 0 {
		return c, nil
	}
	L, rows := float64(s.Layers), float64(c.Rows)
	wBytes := L * r.layerWeights * float64(s.WeightBytes)
	c.Linear = m.roofline(wBytes/bw, 2*rows*L*r.layerWeights/peak)
	attnFLOPs := 4 * pairs * L * float64(r.qHeads*s.HeadDim)
	c.Attention = m.roofline(kvTokens*r.kvPerTokenRnk/bw, attnFLOPs/peak)
	logits := float64(c.Sampled) * float64(s.Vocab)
	if c.Sampled > 0 {
		head := float64(r.vocab * s.Hidden)
		c.LMHead = m.roofline(head*float64(s.WeightBytes)/bw, 2*float64(c.Sampled)*head/peak)
		c.Sampling = logits * e.SamplePerLogit
		if m.host > 0 {
			c.Sampling += logits * 4 / m.host
		}
	}
	c.Overhead = e.StepOverhead + L*e.LayerOverhead
	if g.TP > 1 {
		span := Span{N: g.TP, Nodes: max(1, g.Nodes)}
		arBytes := rows * float64(s.Hidden*s.ActivationBytes)
		c.AllReduce = 2 * L * m.coll.AllReduce(span, arBytes)
		c.AllReduceBytes = 2 * L * arBytes
		if c.Sampled > 0 {
			c.Gather = m.coll.AllGather(span, float64(c.Sampled*r.vocab*4))
		}
		c.Broadcast = 2 * m.coll.Broadcast(span, float64(4*(3*c.Rows+4*len(batch))))
	}
	return c, nil
}

// computePeak is the FLOP/s a step's matrix products reach: on a CPU
// with a matrix unit priced (tile_peak_flops and tile_compute), its rate
// for BF16 weights (2 bytes on a CPU, where F16 is widened to 4); the
// FMA units' otherwise.
func (m *Model) computePeak() float64 {
	if m.HW.Kind == KindCPU && m.HW.TilePeakFLOPS > 0 && m.Eff.TileCompute > 0 && m.Shape.WeightBytes == 2 {
		return m.HW.TilePeakFLOPS * m.Eff.TileCompute
	}
	return m.HW.PeakFLOPS * m.Eff.Compute
}

// roofline is a product's time from its memory and compute times.
func (m *Model) roofline(memory, compute float64) float64 {
	if m.HW.SerialMemoryCompute {
		return memory + compute
	}
	return max(memory, compute)
}

// AllReduce is the time of one allreduce of bytes on group g.
func (m *Model) AllReduce(g Group, bytes float64) float64 {
	return m.coll.AllReduce(Span{N: g.TP, Nodes: max(1, g.Nodes)}, bytes)
}

// RingAllReduce is NCCL's ring (Simple protocol) time on group g, even
// where NCCL would pick another algorithm.
func (m *Model) RingAllReduce(g Group, bytes float64) float64 {
	return m.coll.RingAllReduce(Span{N: g.TP, Nodes: max(1, g.Nodes)}, bytes)
}

// TreeAllReduce is NCCL's tree (Simple protocol) time on group g.
func (m *Model) TreeAllReduce(g Group, bytes float64) float64 {
	return m.coll.TreeAllReduce(Span{N: g.TP, Nodes: max(1, g.Nodes)}, bytes)
}

// KVCacheBytesPerRank is the KV cache budget of one rank of a TP-tp
// group: the profile's fixed budget (the CPU worker's --kv-cache-mb),
// or the device memory share left after the rank's weights.
func (m *Model) KVCacheBytesPerRank(tp int) (float64, error) {
	if m.HW.KVCacheBytes > 0 {
		return m.HW.KVCacheBytes, nil
	}
	resident, err := m.Shape.ResidentBytesPerRank(tp)
	if err != nil {
		return 0, err
	}
	util := m.HW.MemoryUtilization
	if util <= 0 {
		util = 0.9
	}
	left := m.HW.MemoryBytes*util - float64(resident)
	if left <= 0 {
		return 0, fmt.Errorf("%w: %s's weights take %.1f GB per rank at TP %d, more than %.0f%% of %s's %.0f GB",
			ErrDoesNotFit, m.Shape.Name, float64(resident)/1e9, tp, util*100, m.HW.Name, m.HW.MemoryBytes/1e9)
	}
	return left, nil
}

// share is the rank share of TP tp, computed once per degree. A Model is
// not safe for concurrent use.
func (m *Model) share(tp int) (rankShare, error) {
	if r, ok := m.shares[tp]; ok {
		return r, nil
	}
	r, err := m.Shape.share(tp)
	if err == nil {
		m.shares[tp] = r
	}
	return r, err
}

// SharedRate is the share of a shared device's speed (its profile's
// bandwidth and peak, all cores together) that a rank computing with
// threads threads gets while busyThreads threads, its own included, are
// computing on the device: the runnable threads, other work's
// (Efficiency.BackgroundLoad) added, share the cores fairly, each
// getting min(1, cores/runnable) of one. On an unshared device it is 1.
func (m *Model) SharedRate(threads, busyThreads int) float64 {
	if !m.HW.Shared {
		return 1
	}
	c := float64(m.HW.Cores)
	runnable := float64(max(busyThreads, threads)) + m.Eff.BackgroundLoad
	return float64(threads) * min(1, c/runnable) / c
}

// ThreadsPerRank is the --threads `tandem up` gives each of ranks worker
// processes sharing a machine: its cores split evenly, at least one each.
func (m *Model) ThreadsPerRank(ranks int) int {
	if !m.HW.Shared {
		return 1
	}
	return max(1, m.HW.Cores/max(1, ranks))
}
