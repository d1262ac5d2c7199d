package costmodel

import (
	"github.com/tandemllm/tandem/parallel"
)

// KVTransfer is the time to move the KV cache of a prompt of tokens from
// a TP-p prefill group to a TP-d decode group, over the node's own link
// or, when crossNode, the link between nodes. Each prefill rank pushes
// its heads to the decode ranks parallel.KVTransfers assigns, all pairs
// at once; the busiest rank's link (out of a prefill rank or into a
// decode rank) bounds the time.
func (m *Model) KVTransfer(p, d, tokens int, crossNode bool) (float64, error) {
	ts, err := parallel.KVTransfers(m.Shape.KVHeads, p, d)
	if err != nil {
		return 0, err
	}
	perHead := float64(2*m.Shape.Layers*m.Shape.HeadDim*m.Shape.KVBytes) * float64(tokens)
	out, in := make([]float64, p), make([]float64, d)
	for _, t := range ts {
		b := perHead * float64(t.Heads.Len())
		out[t.From] += b
		in[t.To] += b
	}
	var busiest float64
	for _, b := range append(out, in...) {
		busiest = max(busiest, b)
	}
	alpha, beta := m.transferLink(crossNode)
	return alpha + busiest/beta, nil
}

// transferLink is the latency and bandwidth KV chunks see.
func (m *Model) transferLink(crossNode bool) (alpha, beta float64) {
	l := m.Intra
	if crossNode {
		l = m.Inter
	}
	alpha, beta = l.Latency, l.Bandwidth
	if m.HW.Kind == KindCPU {
		alpha += m.HW.NetworkLatency
		if beta == 0 || beta > m.HW.NetworkBandwidth {
			beta = m.HW.NetworkBandwidth
		}
	}
	return alpha, beta * m.Eff.Transfer
}

// VisibleTransfer is how long a transfer of total seconds outlasts the
// step that computes the prompt's last chunk (lastStep seconds of
// layers): each layer's KV leaves as soon as the layer is done, so only
// what the remaining layers cannot hide shows, and never less than the
// last layer's share.
func (m *Model) VisibleTransfer(total, lastStep float64) float64 {
	L := float64(m.Shape.Layers)
	perLayer := lastStep / L
	return max(total/L, total-lastStep+perLayer)
}

// KVLoad is how long the busiest rank of a TP-d decode group takes to
// write a prompt's KV, received from a TP-p prefill group, into its
// cache blocks: its bytes at effective memory bandwidth.
func (m *Model) KVLoad(p, d, tokens int) float64 {
	ts, err := parallel.KVTransfers(m.Shape.KVHeads, p, d)
	if err != nil {
		return 0
	}
	in := make([]int, d)
	for _, t := range ts {
		in[t.To] += t.Heads.Len()
	}
	busiest := 0
	for _, h := range in {
		busiest = max(busiest, h)
	}
	bytes := float64(2*m.Shape.Layers*m.Shape.HeadDim*m.Shape.KVBytes*busiest) * float64(tokens)
	return bytes / (m.HW.MemoryBandwidth * m.Eff.Memory)
}
