package ring

import (
	"context"
	"fmt"
	"time"

	"github.com/tandemllm/tandem/nccl"
)

// segmentBytes is the unit of the ring's pipeline: each is received,
// added and forwarded on its own, so the next rank starts on it while
// this one receives the next.
const segmentBytes = 512 << 10

func (c *Comm) record(kind nccl.Kind, bytes, peer int, start time.Time) {
	if r := c.opts.Recorder; r != nil {
		r.Record(nccl.Call{Kind: kind, Bytes: bytes, Peer: peer, Start: start, Dur: time.Since(start)})
	}
}

// run executes one call's protocol under ctx. body runs only when there
// are peers; its error aborts the communicator.
func (c *Comm) run(ctx context.Context, kind nccl.Kind, body func() error) error {
	stop, err := c.begin(ctx)
	if err != nil || c.size == 1 {
		return err
	}
	err = body()
	if err != nil {
		// Close first: a writer blocked on a peer that will never read
		// again must be released before waiting for it.
		c.closeConns()
	}
	if werr := c.waitAll(); err == nil {
		err = werr
	}
	return c.end(ctx, stop, err, kind)
}

func (c *Comm) closeConns() {
	for _, p := range c.peers {
		if p != nil {
			p.conn.Close()
		}
	}
}

// AllReduce sums buf across the group, in place. Every rank ends with the
// same bits. Small buffers take the latency path (recursive doubling,
// doubling.go); large ones the bandwidth-optimal ring.
func (c *Comm) AllReduce(ctx context.Context, buf nccl.Buffer) error {
	defer c.record(nccl.KindAllReduce, buf.Bytes(), -1, time.Now())
	if err := checkHost(buf, "allreduce buffer"); err != nil {
		return c.refuse(err)
	}
	h := header{kind: nccl.KindAllReduce, dtype: buf.DType(), count: uint64(buf.Count()), alg: algRing}
	switch {
	case c.shm != nil:
		h.alg = algShm
	case buf.Bytes() <= c.opts.SmallMessageBytes || buf.Count() < c.size:
		h.alg = algDoubling
	}
	return c.run(ctx, nccl.KindAllReduce, func() error {
		switch h.alg {
		case algShm:
			return c.allReduceShm(ctx, h, buf)
		case algDoubling:
			return c.allReduceDoubling(h, buf)
		}
		return c.allReduceRing(h, buf)
	})
}

// chunk is the byte range of chunk i of n over count elements of size
// bytes: the first count%n chunks get one element more.
func chunk(i, n, count, size int) (int, int) {
	q, r := count/n, count%n
	from := i*q + min(i, r)
	to := from + q
	if i < r {
		to++
	}
	return from * size, to * size
}

// allReduceRing is the bandwidth-optimal ring: n-1 reduce-scatter steps
// then n-1 all-gather steps, so that every rank sends and receives
// 2(n-1)/n of the buffer. It runs as one pipelined stream per direction:
// each segment received is added (reduce-scatter) or stored in place
// (all-gather) and at once queued for the right neighbour, to which a
// writer goroutine sends the queue in order, so a rank's sending and
// receiving never wait for a whole step, both ends of every connection
// stay busy and nothing is copied beyond the kernel's copies and the
// additions. The chunk a rank sends at step s+1 is the one it received at
// step s (and at step 0 its own), split into the same segments on every
// rank, so the streams match without framing. A segment is overwritten
// (all-gather) only after it has gone all round the ring, which it cannot
// before this rank's write of it returns; waiting for the writer's
// acknowledgement of that segment first costs nothing and says so to the
// race detector, which cannot see the ordering through the sockets.
func (c *Comm) allReduceRing(h header, buf nccl.Buffer) error {
	if err := c.announce(h, nil); err != nil {
		return err
	}
	n, data, es, count := c.size, buf.Host(), buf.DType().Size(), buf.Count()
	mod := func(i int) int { return (i%n + n) % n }
	span := func(i int) []byte {
		from, to := chunk(i, n, count, es)
		return data[from:to]
	}
	steps := 2 * (n - 1)
	// recv is the chunk received at step s: reduce-scatter then all-gather.
	recv := func(s int) (int, []byte) {
		i := mod(c.rank - s - 1)
		if s >= n-1 {
			i = mod(c.rank - (s - (n - 1)))
		}
		return i, span(i)
	}
	segs := steps * ((len(span(0)) + segmentBytes - 1) / segmentBytes)
	out, acks := make(chan []byte, segs), make(chan struct{}, segs)
	if err := c.postStream(c.right, out, acks); err != nil {
		return err
	}
	// queued[i] is the queue position of the first segment of chunk i
	// when last queued (-1: never); acked counts the writer's acks.
	queued := make([]int, n)
	for i := range queued {
		queued[i] = -1
	}
	next, acked := 0, 0
	queue := func(i, off int, seg []byte) {
		if off == 0 {
			queued[i] = next
		}
		out <- seg
		next++
	}
	for off := 0; off < len(span(c.rank)); off += segmentBytes {
		queue(c.rank, off, span(c.rank)[off:min(off+segmentBytes, len(span(c.rank)))])
	}
	var err error
	for s := 0; s < steps && err == nil; s++ {
		i, dst := recv(s)
		sent := queued[i] // before this step queues the chunk again
		for off, j := 0, 0; off < len(dst) && err == nil; off, j = off+segmentBytes, j+1 {
			seg := dst[off:min(off+segmentBytes, len(dst))]
			if s < n-1 {
				err = c.recvReduce(h.dtype, seg)
			} else {
				for ; sent >= 0 && acked <= sent+j; acked++ {
					<-acks
				}
				err = c.read(c.left, seg)
			}
			if err == nil && s < steps-1 {
				queue(i, off, seg)
			}
		}
	}
	close(out)
	if werr := c.wait(c.right); err == nil {
		err = werr
	}
	return err
}

// recvReduce reads the left neighbour's partial sums of dst (at most a
// segment) and adds them into dst.
func (c *Comm) recvReduce(dt nccl.DType, dst []byte) error {
	in := c.left.buf(len(dst))
	if err := c.read(c.left, in); err != nil {
		return err
	}
	if dt == nccl.F32 {
		addF32(f32s(dst), f32s(in))
	} else {
		addBF16(u16s(dst), u16s(in))
	}
	return nil
}

// AllGather concatenates every rank's send into recv, in rank order.
// send may be this rank's own slot of recv.
func (c *Comm) AllGather(ctx context.Context, send, recv nccl.Buffer) error {
	defer c.record(nccl.KindAllGather, send.Bytes(), -1, time.Now())
	if err := checkHost(send, "allgather send buffer"); err != nil {
		return c.refuse(err)
	}
	if err := checkHost(recv, "allgather receive buffer"); err != nil {
		return c.refuse(err)
	}
	if recv.Count() != c.size*send.Count() || recv.DType() != send.DType() {
		return c.refuse(fmt.Errorf("ring: allgather of %d %s needs a receive buffer of %d %s, got %d %s",
			send.Count(), send.DType(), c.size*send.Count(), send.DType(), recv.Count(), recv.DType()))
	}
	mine, all := send.Host(), recv.Host()
	copy(all[c.rank*len(mine):], mine)
	h := header{kind: nccl.KindAllGather, dtype: send.DType(), count: uint64(send.Count())}
	return c.run(ctx, nccl.KindAllGather, func() error {
		if err := c.announce(h, mine); err != nil {
			return err
		}
		for r, p := range c.peers {
			if p != nil {
				if err := c.read(p, all[r*len(mine):(r+1)*len(mine)]); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Broadcast copies root's buf to every rank. Every rank announces the
// call to every other, so that a mismatch is seen everywhere; only the
// root sends data, straight to each rank.
func (c *Comm) Broadcast(ctx context.Context, buf nccl.Buffer, root int) error {
	defer c.record(nccl.KindBroadcast, buf.Bytes(), root, time.Now())
	if err := checkHost(buf, "broadcast buffer"); err != nil {
		return c.refuse(err)
	}
	if root < 0 || root >= c.size {
		return c.refuse(fmt.Errorf("ring: broadcast root %d outside 0..%d", root, c.size-1))
	}
	h := header{kind: nccl.KindBroadcast, dtype: buf.DType(), count: uint64(buf.Count()), root: int32(root)}
	return c.run(ctx, nccl.KindBroadcast, func() error {
		var data []byte
		if c.rank == root {
			data = buf.Host()
		}
		if err := c.announce(h, data); err != nil {
			return err
		}
		if c.rank != root {
			return c.read(c.peers[root], buf.Host())
		}
		return nil
	})
}

func (c *Comm) checkPeer(peer int) error {
	if peer < 0 || peer >= c.size || peer == c.rank {
		return fmt.Errorf("ring: rank %d cannot exchange with peer %d (group of %d)", c.rank, peer, c.size)
	}
	return nil
}

// checkPair checks the header of a Send's or Recv's counterpart.
func (c *Comm) checkPair(p *peer, mine header, want nccl.Kind) error {
	got := p.got
	if got.kind != want || got.count != mine.count || got.dtype != mine.dtype {
		return fmt.Errorf("ring: rank %d: %w: rank %d called %v with rank %d, rank %d called %v with rank %d",
			c.rank, nccl.ErrMismatch, p.rank, got, c.rank, c.rank, mine, p.rank)
	}
	if got.seq != p.recvSeq {
		return fmt.Errorf("ring: rank %d: %w: rank %d is at its call %d with this rank, this rank at call %d (a rank skipped calls)",
			c.rank, nccl.ErrMismatch, p.rank, got.seq, p.recvSeq)
	}
	p.recvSeq++
	return nil
}

// Send moves buf to peer, which must call Recv with a matching buffer.
// The receiver answers with its own header, so both sides see a
// mismatch; a large buffer is sent only after that answer, so two ranks
// that both Send at once get a mismatch rather than a deadlock.
func (c *Comm) Send(ctx context.Context, buf nccl.Buffer, peer int) error {
	defer c.record(nccl.KindSend, buf.Bytes(), peer, time.Now())
	if err := checkHost(buf, "send buffer"); err != nil {
		return c.refuse(err)
	}
	if err := c.checkPeer(peer); err != nil {
		return c.refuse(err)
	}
	h := header{kind: nccl.KindSend, dtype: buf.DType(), count: uint64(buf.Count())}
	return c.run(ctx, nccl.KindSend, func() error {
		p, data := c.peers[peer], buf.Host()
		small := headerBytes+len(data) <= inlineBytes
		first := data
		if !small {
			first = nil
		}
		if err := c.post(p, h, first); err != nil {
			return err
		}
		if err := c.readHeader(p); err != nil {
			return err
		}
		if err := c.checkPair(p, h, nccl.KindRecv); err != nil {
			return err
		}
		if !small {
			if _, err := p.conn.Write(data); err != nil {
				return c.lost(p, err)
			}
		}
		return nil
	})
}

// Recv fills buf from peer's matching Send.
func (c *Comm) Recv(ctx context.Context, buf nccl.Buffer, peer int) error {
	defer c.record(nccl.KindRecv, buf.Bytes(), peer, time.Now())
	if err := checkHost(buf, "receive buffer"); err != nil {
		return c.refuse(err)
	}
	if err := c.checkPeer(peer); err != nil {
		return c.refuse(err)
	}
	h := header{kind: nccl.KindRecv, dtype: buf.DType(), count: uint64(buf.Count())}
	return c.run(ctx, nccl.KindRecv, func() error {
		p := c.peers[peer]
		if err := c.post(p, h, nil); err != nil {
			return err
		}
		if err := c.readHeader(p); err != nil {
			return err
		}
		if err := c.checkPair(p, h, nccl.KindSend); err != nil {
			return err
		}
		return c.read(p, buf.Host())
	})
}

// Barrier returns once every rank has called it: one exchange of headers
// with every peer.
func (c *Comm) Barrier(ctx context.Context) error {
	defer c.record(nccl.KindBarrier, 0, -1, time.Now())
	return c.run(ctx, nccl.KindBarrier, func() error {
		return c.announce(header{kind: nccl.KindBarrier}, nil)
	})
}
