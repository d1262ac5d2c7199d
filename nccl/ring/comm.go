package ring

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemllm/tandem/nccl"
)

var _ nccl.Communicator = (*Comm)(nil)

// inlineBytes is the largest message written from the calling goroutine
// before the matching reads. Every rank writes first and reads second, so
// such a write must never wait for the peer to read: 64 KiB sits well
// inside the socket buffers every Linux gives (tcp_rmem's default alone
// is 128 KiB, and Connect asks for more). Larger messages are written by
// the peer's writer goroutine while this one reads.
const inlineBytes = 64 << 10

// headerBytes is the size of the header that opens every call on every
// connection it uses.
const headerBytes = 32

// Algorithms, on the wire so that ranks configured with different
// thresholds report a mismatch instead of mixing protocols.
const (
	algNone     = 0
	algRing     = 2 // reduce-scatter + all-gather around the ring
	algDoubling = 3 // recursive doubling (1 was the retired all-to-all exchange)
	algShm      = 4 // through the shared segment of ranks on one host (shm.go)
)

// header is what a rank announces to a peer for one call.
type header struct {
	kind  nccl.Kind
	dtype nccl.DType
	alg   uint8
	seq   uint64 // calls between this pair of ranks so far
	count uint64
	root  int32 // Broadcast's root; 0 otherwise
}

func kindCode(k nccl.Kind) uint8 {
	switch k {
	case nccl.KindAllReduce:
		return 1
	case nccl.KindAllGather:
		return 2
	case nccl.KindBroadcast:
		return 3
	case nccl.KindSend:
		return 4
	case nccl.KindRecv:
		return 5
	case nccl.KindBarrier:
		return 6
	}
	return 0
}

func kindOf(code uint8) nccl.Kind {
	for _, k := range [...]nccl.Kind{nccl.KindAllReduce, nccl.KindAllGather, nccl.KindBroadcast, nccl.KindSend, nccl.KindRecv, nccl.KindBarrier} {
		if kindCode(k) == code {
			return k
		}
	}
	return ""
}

func (h header) put(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], magic)
	b[4], b[5], b[6], b[7] = kindCode(h.kind), uint8(h.dtype), h.alg, 0
	binary.LittleEndian.PutUint64(b[8:], h.seq)
	binary.LittleEndian.PutUint64(b[16:], h.count)
	binary.LittleEndian.PutUint32(b[24:], uint32(h.root))
	binary.LittleEndian.PutUint32(b[28:], 0)
}

func parseHeader(b []byte) (header, bool) {
	h := header{
		kind: kindOf(b[4]), dtype: nccl.DType(b[5]), alg: b[6],
		seq: binary.LittleEndian.Uint64(b[8:]), count: binary.LittleEndian.Uint64(b[16:]),
		root: int32(binary.LittleEndian.Uint32(b[24:])),
	}
	return h, binary.LittleEndian.Uint32(b[0:]) == magic && h.kind != ""
}

// same reports whether two ranks' headers describe the same call; the
// sequence numbers are per pair and compared separately.
func (h header) same(o header) bool {
	return h.kind == o.kind && h.dtype == o.dtype && h.alg == o.alg && h.count == o.count && h.root == o.root
}

func (h header) String() string {
	switch h.kind {
	case nccl.KindBarrier:
		return "barrier"
	case nccl.KindBroadcast:
		return fmt.Sprintf("broadcast of %d %s from root %d", h.count, h.dtype, h.root)
	case nccl.KindAllReduce:
		alg := "doubling"
		switch h.alg {
		case algRing:
			alg = "ring"
		case algShm:
			alg = "shared memory"
		}
		return fmt.Sprintf("allreduce of %d %s (%s)", h.count, h.dtype, alg)
	}
	return fmt.Sprintf("%s of %d %s", h.kind, h.count, h.dtype)
}

// peer is the connection to one other rank.
type peer struct {
	rank    int
	conn    net.Conn // TCP, or TLS over TCP
	sendSeq uint64
	recvSeq uint64
	got     header // the header last read from this peer
	in      [headerBytes]byte
	scratch []byte // receive space for this peer's data; grows, never shrinks

	// The writer goroutine sends large messages so that the caller can
	// read at the same time: req hands it a message, done gives back the
	// result of each one.
	req     chan message
	done    chan error
	pending bool
	out     []byte // header(s) of the pending asynchronous message
}

// message is a header and data to write, or a stream: segments written in
// order until the channel is closed, each acknowledged on acks once
// written (see allReduceRing).
type message struct {
	hdr, data []byte
	stream    <-chan []byte
	acks      chan<- struct{}
}

func (p *peer) buf(n int) []byte {
	if cap(p.scratch) < n {
		p.scratch = make([]byte, n)
	}
	return p.scratch[:n]
}

// Comm is one rank's connections to its group. Calls (Send and Recv
// included) must come from one goroutine at a time, as on one NCCL
// stream; Close may be called from any goroutine at any time.
type Comm struct {
	rank, size int
	opts       Options
	peers      []*peer // nil at this rank
	right      *peer
	left       *peer

	quit      chan struct{} // closed by Close: the writers exit
	closeOnce sync.Once
	closed    atomic.Bool
	broken    atomic.Pointer[error] // the error that aborted the communicator

	out  []byte        // inline messages: header(s) + data
	intr chan struct{} // signals that an interrupt finished

	// State of the recursive-doubling allreduce (doubling.go).
	hdrs    []header  // every rank's header of the call, as far as known
	agree   bool      // every header known so far describes this rank's call
	members []int     // the ranks whose headers a frame carries
	acc     []float32 // bf16 partial sums, in float32

	shm *shm // the group's shared segment; nil: allreduces over TCP
}

func newComm(rank, size int, opts Options, conns []net.Conn, seg *shm) *Comm {
	c := &Comm{
		rank: rank, size: size, opts: opts, peers: make([]*peer, size), shm: seg,
		quit: make(chan struct{}), intr: make(chan struct{}, 1),
	}
	for r, conn := range conns {
		if conn == nil {
			continue
		}
		p := &peer{rank: r, conn: conn, req: make(chan message), done: make(chan error, 1)}
		c.peers[r] = p
		go c.writer(p)
	}
	c.right, c.left = c.peers[(rank+1)%size], c.peers[(rank+size-1)%size]
	return c
}

// tune sets a new connection's socket options, before any TLS.
func tune(conn *net.TCPConn, opts Options) {
	// Small messages go out at once; big ones need room in flight.
	conn.SetNoDelay(true)
	conn.SetReadBuffer(opts.SocketBuffer)
	conn.SetWriteBuffer(opts.SocketBuffer)
	conn.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: opts.PeerTimeout / 4, Interval: opts.PeerTimeout / 4, Count: 3})
	setUserTimeout(conn, opts.PeerTimeout)
}

func (c *Comm) writer(p *peer) {
	for {
		select {
		case m := <-p.req:
			var err error
			if m.stream != nil {
				// After a failure the rest is drained unsent, so the
				// queueing side never blocks.
				for seg := range m.stream {
					if err == nil {
						_, err = p.conn.Write(seg)
					}
					m.acks <- struct{}{}
				}
			} else {
				_, err = p.conn.Write(m.hdr)
				if err == nil && len(m.data) > 0 {
					_, err = p.conn.Write(m.data)
				}
			}
			p.done <- err
		case <-c.quit:
			return
		}
	}
}

// Rank is this rank.
func (c *Comm) Rank() int { return c.rank }

// Size is the number of ranks.
func (c *Comm) Size() int { return c.size }

// SharedMemory reports whether the group's allreduces go through a shared
// memory segment (every rank on one host) rather than TCP.
func (c *Comm) SharedMemory() bool { return c.shm != nil }

// Close closes every connection: blocked calls here fail with ErrClosed
// and the peers' calls with ErrPeerLost. It is safe to call more than once.
func (c *Comm) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.fail(nccl.ErrClosed)
		if c.shm != nil {
			c.shm.abort(true)
		}
		for _, p := range c.peers {
			if p != nil {
				p.conn.Close()
			}
		}
		close(c.quit)
	})
	return nil
}

// fail records err as the reason the communicator is unusable (the first
// one wins) and returns that reason.
func (c *Comm) fail(err error) error {
	c.broken.CompareAndSwap(nil, &err)
	return *c.broken.Load()
}

// abort breaks the communicator and closes its connections, so that every
// peer's pending or next call fails too and the failure goes round the
// group. Mismatches abort as well: a peer may be waiting for this rank in
// a call it will never make.
func (c *Comm) abort(err error) {
	c.fail(err)
	if c.shm != nil {
		c.shm.abort(false)
	}
	for _, p := range c.peers {
		if p != nil {
			p.conn.Close()
		}
	}
}

// refuse fails a call this rank will not take part in (bad arguments, ctx
// already done): the peers would wait for it forever, so it breaks the
// group like any other failure.
func (c *Comm) refuse(err error) error {
	c.abort(err)
	return err
}

// interrupt unblocks the caller's I/O when its ctx ends.
func (c *Comm) interrupt() {
	past := time.Unix(1, 0)
	for _, p := range c.peers {
		if p != nil {
			p.conn.SetDeadline(past)
		}
	}
	c.intr <- struct{}{}
}

func (c *Comm) setDeadlines(t time.Time) {
	for _, p := range c.peers {
		if p != nil {
			p.conn.SetDeadline(t)
		}
	}
}

// begin checks the communicator and ctx before a call and arms ctx: its
// deadline becomes the connections' deadline and its cancellation an
// immediate one. The stop function it returns (nil when ctx can never end)
// disarms it.
func (c *Comm) begin(ctx context.Context) (func() bool, error) {
	if b := c.broken.Load(); b != nil {
		if errors.Is(*b, nccl.ErrClosed) {
			return nil, fmt.Errorf("ring: rank %d: %w", c.rank, *b)
		}
		return nil, fmt.Errorf("ring: rank %d: %w by an earlier error: %w", c.rank, nccl.ErrClosed, *b)
	}
	if err := ctx.Err(); err != nil {
		return nil, c.refuse(fmt.Errorf("ring: rank %d: %w", c.rank, err))
	}
	if ctx.Done() == nil || c.size == 1 {
		return nil, nil
	}
	if dl, ok := ctx.Deadline(); ok {
		c.setDeadlines(dl)
	}
	return context.AfterFunc(ctx, c.interrupt), nil
}

// end disarms ctx and turns err into the error the caller sees, aborting
// the communicator if the call failed.
func (c *Comm) end(ctx context.Context, stop func() bool, err error, kind nccl.Kind) error {
	if stop != nil {
		if stop() {
			if _, ok := ctx.Deadline(); ok {
				c.setDeadlines(time.Time{})
			}
		} else {
			<-c.intr // the interrupt ran: wait until it is done
			if err == nil {
				c.setDeadlines(time.Time{}) // finished just before ctx ended
			}
		}
	}
	if err != nil {
		switch {
		case c.closed.Load():
			err = fmt.Errorf("ring: rank %d: %s: %w", c.rank, kind, nccl.ErrClosed)
		case ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
			cause := ctx.Err()
			if cause == nil {
				cause = context.DeadlineExceeded // the connection's deadline beat ctx's timer
			}
			err = fmt.Errorf("ring: rank %d: %s: %w", c.rank, kind, cause)
		}
		c.abort(err)
	}
	return err
}

func (c *Comm) lost(p *peer, err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("ring: rank %d: %w: rank %d closed its connection (it failed or was closed)", c.rank, nccl.ErrPeerLost, p.rank)
	}
	return fmt.Errorf("ring: rank %d: %w: rank %d: %w", c.rank, nccl.ErrPeerLost, p.rank, err)
}

// hdr fills in the next header for peer p.
func (p *peer) next(h header, b []byte) {
	h.seq = p.sendSeq
	p.sendSeq++
	h.put(b)
}

// post writes h followed by data to p: from this goroutine when small,
// else by p's writer while the caller goes on; wait collects the result.
func (c *Comm) post(p *peer, h header, data []byte) error {
	hdr := p.header(headerBytes)
	p.next(h, hdr)
	return c.postFrame(p, hdr, data)
}

// header returns p's buffer for the headers of its next frame.
func (p *peer) header(n int) []byte {
	if cap(p.out) < n {
		p.out = make([]byte, n)
	}
	return p.out[:n]
}

// postFrame writes hdr (p's own buffer, see header) followed by data to
// p, as post does.
func (c *Comm) postFrame(p *peer, hdr, data []byte) error {
	n := len(hdr) + len(data)
	if n > inlineBytes {
		return c.postRaw(p, hdr, data)
	}
	if cap(c.out) < n {
		c.out = make([]byte, n, inlineBytes)
	}
	b := c.out[:n]
	copy(b, hdr)
	copy(b[len(hdr):], data)
	if _, err := p.conn.Write(b); err != nil {
		return c.lost(p, err)
	}
	return nil
}

// postRaw hands bytes to p's writer.
func (c *Comm) postRaw(p *peer, hdr, data []byte) error {
	return c.postMessage(p, message{hdr: hdr, data: data})
}

// postStream hands p's writer a stream of segments: it writes them in
// order until the caller closes segs, and sends on acks after each (acks
// must have room for every segment); wait collects the result.
func (c *Comm) postStream(p *peer, segs <-chan []byte, acks chan<- struct{}) error {
	return c.postMessage(p, message{stream: segs, acks: acks})
}

func (c *Comm) postMessage(p *peer, m message) error {
	select {
	case p.req <- m:
		p.pending = true
		return nil
	case <-c.quit:
		return fmt.Errorf("ring: rank %d: %w", c.rank, nccl.ErrClosed)
	}
}

func (c *Comm) wait(p *peer) error {
	if !p.pending {
		return nil
	}
	p.pending = false
	if err := <-p.done; err != nil {
		return c.lost(p, err)
	}
	return nil
}

// waitAll collects every pending write, even after an error, so that no
// writer still reads the caller's buffer when the call returns.
func (c *Comm) waitAll() error {
	var first error
	for _, p := range c.peers {
		if p != nil {
			if err := c.wait(p); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// readHeader reads p's next header into p.got.
func (c *Comm) readHeader(p *peer) error {
	if _, err := io.ReadFull(p.conn, p.in[:]); err != nil {
		return c.lost(p, err)
	}
	h, ok := parseHeader(p.in[:])
	if !ok {
		return fmt.Errorf("ring: rank %d: %w: rank %d sent a corrupt header", c.rank, nccl.ErrMismatch, p.rank)
	}
	p.got = h
	return nil
}

func (c *Comm) read(p *peer, dst []byte) error {
	if _, err := io.ReadFull(p.conn, dst); err != nil {
		return c.lost(p, err)
	}
	return nil
}

// announce sends h (and data, if any) to every peer and reads and checks
// every peer's header. Every rank reads every header before it reads any
// data, so all ranks see the same set of headers and report a mismatch
// with the same words.
func (c *Comm) announce(h header, data []byte) error {
	for _, p := range c.peers {
		if p != nil {
			if err := c.post(p, h, data); err != nil {
				return err
			}
		}
	}
	for _, p := range c.peers {
		if p != nil {
			if err := c.readHeader(p); err != nil {
				return err
			}
		}
	}
	return c.check(h)
}

// check compares every rank's header with rank 0's, so that every rank
// names the same pair, then the per-pair sequence numbers.
func (c *Comm) check(h header) error {
	err := c.mismatch(func(r int) header {
		if r == c.rank {
			return h
		}
		return c.peers[r].got
	})
	if err != nil {
		return err
	}
	for _, p := range c.peers {
		if p != nil {
			if p.got.seq != p.recvSeq {
				return fmt.Errorf("ring: rank %d: %w: rank %d is at its call %d with this rank, this rank at call %d (a rank skipped calls)",
					c.rank, nccl.ErrMismatch, p.rank, p.got.seq, p.recvSeq)
			}
			p.recvSeq++
		}
	}
	return nil
}

// mismatch compares every rank's header (got) with rank 0's: every rank
// that knows all the headers names the same pair.
func (c *Comm) mismatch(got func(r int) header) error {
	ref := got(0)
	for r := 1; r < c.size; r++ {
		if h := got(r); !h.same(ref) {
			return fmt.Errorf("ring: rank %d: %w: rank %d called %v, rank 0 called %v",
				c.rank, nccl.ErrMismatch, r, h, ref)
		}
	}
	return nil
}

func checkHost(b nccl.Buffer, what string) error {
	if b.DType() != nccl.F32 && b.DType() != nccl.BF16 {
		return fmt.Errorf("ring: %s has unsupported dtype %v", what, b.DType())
	}
	if b.Host() == nil && b.Count() > 0 {
		return fmt.Errorf("ring: %s is device memory; the TCP ring moves host memory only (use nccl/nvidia)", what)
	}
	return nil
}
