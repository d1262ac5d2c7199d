package ring

import (
	"fmt"
	"io"
	"math/bits"

	"github.com/tandemllm/tandem/nccl"
)

// allReduceDoubling is the latency path: recursive doubling, as MPI
// libraries run short allreduces. With pow the largest power of two not
// above n, ranks pow..n-1 first fold their buffers into ranks 0..n-pow-1;
// ranks 0..pow-1 then take log2(pow) steps, at step k swapping their
// partial sums with rank XOR k and adding; the folded ranks at last get
// the result from the rank they folded into. That is at most
// ⌈log2 n⌉ + 1 exchanges in a row, each of one whole buffer with one peer,
// where a direct exchange with every peer has n-1 buffers to move and to
// wait for at each rank.
//
// Every rank ends with the same bits: at each step the two partners hold
// the sums of two disjoint blocks of ranks, each the same bits on every
// rank of its block, and add them (a+b and b+a are the same bits); a
// folded rank copies its result. The tree depends on n only, so results
// repeat run to run. bf16 partial sums travel as float32 (a rank's own
// values as bf16) and are rounded to bf16 once, at the end.
//
// Each frame opens with the headers of every rank whose values it sums
// (the sender's first), so at the end every rank of the call has seen
// every rank's header and a mismatch is reported by all with the same
// words. A frame carries data only while every header its sender has
// seen agrees with the sender's own; the receiver, seeing the same
// headers, knows whether data follows. After a disagreement the steps go
// on with headers only, which spreads them to every rank.
func (c *Comm) allReduceDoubling(h header, buf nccl.Buffer) error {
	n, me, data := c.size, c.rank, buf.Host()
	pow := 1 << (bits.Len(uint(n)) - 1)
	if cap(c.hdrs) < n {
		c.hdrs = make([]header, n)
	}
	c.hdrs = c.hdrs[:n]
	c.hdrs[me], c.agree = h, true
	if me >= pow { // fold into me-pow, then take its result
		core := c.peers[me-pow]
		if err := c.sendFrame(core, c.block(me, 0, 0), h, data); err != nil {
			return err
		}
		in, err := c.recvFrame(core, c.block(me-pow, pow, pow), len(data))
		if err != nil {
			return err
		}
		if err := c.wait(core); err != nil { // data was being sent
			return err
		}
		copy(data, in)
		return c.agreed()
	}
	var acc []float32 // bf16: the partial sum
	partial := data
	if h.dtype == nccl.BF16 {
		if cap(c.acc) < int(h.count) {
			c.acc = make([]float32, h.count)
		}
		acc = c.acc[:h.count]
		widenBF16(acc, u16s(data))
		partial = bytesF32(acc)
	}
	// add adds a frame's data (none after a disagreement): a rank's own
	// bf16 values, or a partial sum.
	add := func(in []byte) {
		switch {
		case in == nil:
		case acc == nil:
			addF32(f32s(data), f32s(in))
		case len(in) == len(data):
			accBF16(acc, u16s(in))
		default:
			addF32(acc, f32s(in))
		}
	}
	// wire is the data of a frame summing ranks ranks.
	wire := func(ranks int) int {
		if acc != nil && ranks == 1 {
			return len(data)
		}
		return len(partial)
	}
	if x := me + pow; x < n {
		in, err := c.recvFrame(c.peers[x], c.block(x, 0, 0), wire(1))
		if err != nil {
			return err
		}
		add(in)
	}
	for k := 1; k < pow; k <<= 1 {
		q := c.peers[me^k]
		mine := c.block(me, k, pow)
		out := partial
		if len(mine) == 1 {
			out = data // this rank's own values
		}
		if err := c.sendFrame(q, mine, h, out); err != nil {
			return err
		}
		theirs := c.block(me^k, k, pow)
		in, err := c.recvFrame(q, theirs, wire(len(theirs)))
		if err != nil {
			return err
		}
		if err := c.wait(q); err != nil { // out is written: partial may change
			return err
		}
		add(in)
	}
	if acc != nil && c.agree {
		narrowBF16(u16s(data), acc)
	}
	if x := me + pow; x < n {
		if err := c.sendFrame(c.peers[x], c.block(me, pow, pow), h, data); err != nil {
			return err
		}
	}
	return c.agreed()
}

// block lists the ranks whose sums rank core holds once it has summed
// with k-1 partners' blocks (k a power of two; 0 for a folded rank's own
// values alone): the cores of its aligned block of k and the ranks folded
// into them. core comes first, the others in rank order.
func (c *Comm) block(core, k, pow int) []int {
	m := append(c.members[:0], core)
	if k == 0 {
		c.members = m
		return m
	}
	base := core &^ (k - 1)
	for r := base; r < base+k; r++ {
		if r != core {
			m = append(m, r)
		}
	}
	for r := base; r < base+k; r++ {
		if r+pow < c.size {
			m = append(m, r+pow)
		}
	}
	// In rank order after the first: cores, then the folded ranks, are
	// each ascending, and every folded rank is above every core.
	c.members = m
	return m
}

// sendFrame writes to p the headers of ranks (this rank's own, h, first)
// and data, if every header seen so far agrees with h.
func (c *Comm) sendFrame(p *peer, ranks []int, h header, data []byte) error {
	hdr := p.header(len(ranks) * headerBytes)
	p.next(h, hdr)
	for i, r := range ranks[1:] {
		c.hdrs[r].put(hdr[(i+1)*headerBytes:])
	}
	if !c.agree {
		data = nil
	}
	return c.postFrame(p, hdr, data)
}

// recvFrame reads p's frame of the headers of ranks and, if they all
// agree with this rank's call and every header seen before did,
// size bytes of data, which it returns; nil when no data is to be used.
// The data is read in the same system call as the headers when it has
// arrived; never past the frame.
func (c *Comm) recvFrame(p *peer, ranks []int, size int) ([]byte, error) {
	hb := len(ranks) * headerBytes
	b := p.buf(hb + size)
	got, err := io.ReadAtLeast(p.conn, b, hb)
	if err != nil {
		return nil, c.lost(p, err)
	}
	sender := true // the frame sends data: its headers all agree
	for i, r := range ranks {
		g, ok := parseHeader(b[i*headerBytes:])
		if !ok {
			return nil, fmt.Errorf("ring: rank %d: %w: rank %d sent a corrupt header", c.rank, nccl.ErrMismatch, p.rank)
		}
		if i == 0 {
			if g.seq != p.recvSeq {
				return nil, fmt.Errorf("ring: rank %d: %w: rank %d is at its call %d with this rank, this rank at call %d (a rank skipped calls)",
					c.rank, nccl.ErrMismatch, p.rank, g.seq, p.recvSeq)
			}
			p.recvSeq++
		}
		c.hdrs[r] = g
		sender = sender && g.same(c.hdrs[ranks[0]])
	}
	c.agree = c.agree && sender && c.hdrs[ranks[0]].same(c.hdrs[c.rank])
	if !c.agree {
		// Whatever data the frame has is left unread: the call fails and
		// the connection with it.
		return nil, nil
	}
	if got < len(b) {
		if err := c.read(p, b[got:]); err != nil {
			return nil, err
		}
	}
	return b[hb:], nil
}

// agreed is the call's verdict once every rank's header is known.
func (c *Comm) agreed() error {
	if c.agree {
		return nil
	}
	return c.mismatch(func(r int) header { return c.hdrs[r] })
}
