package kvtransfer

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// The raw data plane: a TCP connection that carries Push streams without
// gRPC. See "Raw TCP" in the package doc for the wire format.
const (
	// rawMagic starts the hello; Mux routes on it.
	rawMagic = "TANDEMKV1\n"
	// rawHello is what a Sender writes first. It is longer than the 24
	// bytes of the HTTP/2 client preface, so a gRPC server that is not
	// behind Mux reads a whole wrong preface and hangs up at once.
	rawHello = rawMagic + "kvtransfer raw data plane\n\n\n\n\n\n\n"
	// rawReply is the receiver's answer to the hello.
	rawReply = rawMagic

	rawPrefixBytes = 8 // u32 header length, u32 payload length
	// rawPiece is how much of a payload a receiver reads before
	// checksumming it: small enough to be checksummed from L2 cache.
	rawPiece     = 256 << 10
	maxRawHeader = 64 << 10
	maxRawAck    = 64 << 20
	// rawSocketBuffer is SO_SNDBUF/SO_RCVBUF for raw connections.
	rawSocketBuffer = 4 << 20
	// rawHandshakeTimeout bounds the hello and its reply.
	rawHandshakeTimeout = 10 * time.Second
	// rawFrameTimeout bounds reading one frame's header and payload once
	// its prefix has arrived (between frames a sender may wait on prefill).
	rawFrameTimeout = time.Minute
	// rawIdle is how long a Sender keeps an unused connection.
	rawIdle = 30 * time.Second
	// maxIdleRaw is how many unused connections a Sender keeps per address.
	maxIdleRaw = 4
	// rawRefusedFor is how long a Sender sends over gRPC to an address that
	// refused the raw hello before trying raw again.
	rawRefusedFor = time.Minute
)

// RawHello is what a Sender writes first on a raw connection, and
// RawPrefixBytes the length of each frame's prefix (a u32 header length
// and a u32 payload length; see "Raw TCP" in the package doc): what a
// proxy on the data plane (the chaos suite's) needs to find the frames.
const (
	RawHello       = rawHello
	RawPrefixBytes = rawPrefixBytes
)

var (
	// errRawRefused: the address does not speak the raw protocol.
	errRawRefused   = errors.New("raw hello refused")
	errSenderClosed = errors.New("kvtransfer: sender closed")
)

// setBuffers raises a TCP connection's socket buffers, looking through
// Mux's wrapper and TLS.
func setBuffers(c net.Conn) {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(rawSocketBuffer)
		_ = tc.SetWriteBuffer(rawSocketBuffer)
	}
}

// ServeRaw serves the raw TCP data plane on ln (one side of [Mux], or a
// listener of its own) until ln is closed, then closes the connections it
// has open and returns nil once their handlers have ended.
func (r *Receiver) ServeRaw(ln net.Listener) error {
	var (
		mu    sync.Mutex
		conns = make(map[net.Conn]struct{})
		wg    sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				t := time.NewTimer(backoff)
				<-t.C
				continue
			}
			return err
		}
		backoff = 0
		mu.Lock()
		if conns == nil {
			mu.Unlock()
			c.Close()
			return nil
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
			if err := r.serveRaw(c); err != nil {
				r.opts.Logger.Warn("kvtransfer: hung up on a raw connection that broke the protocol", "peer", c.RemoteAddr().String(), "err", err)
			}
		})
	}
}

// serveRaw answers the hello, then receives streams until the connection
// ends (nil) or breaks the protocol (an error saying how). Every length it
// reads is checked before anything of that size is allocated: a header's
// against maxRawHeader, a payload's against maxMessageBytes and then,
// before it is read, against the size the chunk's shape implies
// (validate); a payload that fails is discarded as it streams in.
func (r *Receiver) serveRaw(c net.Conn) error {
	setBuffers(c)
	if ok, err := rawHandshake(c); !ok {
		return err
	}
	// A large payload read with nothing buffered goes straight from the
	// socket into the layer buffer; the buffer serves headers.
	rs := &rawServe{r: r, c: c, br: bufio.NewReaderSize(c, 64<<10)}
	for {
		st := &stream{}
		if ok, err := rs.frames(st); !ok {
			return err
		}
		ack, err := proto.Marshal(r.finish(st))
		if err != nil {
			return fmt.Errorf("encoding an ack: %w", err)
		}
		_ = c.SetWriteDeadline(time.Now().Add(rawFrameTimeout))
		if _, err := c.Write(append(binary.LittleEndian.AppendUint32(nil, uint32(len(ack))), ack...)); err != nil {
			return nil
		}
		_ = c.SetWriteDeadline(time.Time{})
	}
}

// rawHandshake reads the sender's hello and answers it, within
// rawHandshakeTimeout. ok is false when the connection ended (err nil)
// or is not the raw data plane's (err says so).
func rawHandshake(c net.Conn) (ok bool, err error) {
	_ = c.SetDeadline(time.Now().Add(rawHandshakeTimeout))
	hello := make([]byte, len(rawHello))
	if _, err := io.ReadFull(c, hello); err != nil {
		return false, nil
	}
	if string(hello) != rawHello {
		return false, fmt.Errorf("not the raw data plane's hello: %q", hello)
	}
	if _, err := io.WriteString(c, rawReply); err != nil {
		return false, nil
	}
	_ = c.SetDeadline(time.Time{})
	return true, nil
}

// rawServe is one raw connection's receiving side, with the buffers its
// frames reuse.
type rawServe struct {
	r       *Receiver
	c       net.Conn
	br      *bufio.Reader
	m       tandemv1.KVChunk
	prefix  [rawPrefixBytes]byte
	hdr     []byte
	scratch []byte
}

// frames receives one stream's frames into st, up to its end of stream
// (ok). ok is false when the connection ended (err nil) or broke the
// protocol (err says how).
func (rs *rawServe) frames(st *stream) (ok bool, err error) {
	for {
		// A sender keeps an unused connection for rawIdle at most: one
		// silent for longer is gone, and so is its goroutine here.
		_ = rs.c.SetReadDeadline(time.Now().Add(2 * rawIdle))
		if _, err := io.ReadFull(rs.br, rs.prefix[:]); err != nil {
			return false, nil
		}
		hl, n := binary.LittleEndian.Uint32(rs.prefix[:4]), binary.LittleEndian.Uint32(rs.prefix[4:])
		if hl == 0 && n == 0 { // end of stream
			return true, nil
		}
		if hl == 0 || hl > maxRawHeader || n > maxMessageBytes {
			// Not a frame: the connection is out of step.
			return false, fmt.Errorf("frame lengths out of bounds: header %d bytes (1..%d), payload %d bytes (at most %d)", hl, maxRawHeader, n, maxMessageBytes)
		}
		_ = rs.c.SetReadDeadline(time.Now().Add(rawFrameTimeout))
		if cap(rs.hdr) < int(hl) {
			rs.hdr = make([]byte, hl)
		}
		rs.hdr = rs.hdr[:hl]
		if _, err := io.ReadFull(rs.br, rs.hdr); err != nil {
			return false, nil
		}
		if err := unmarshalChunk(mem.BufferSlice{mem.SliceBuffer(rs.hdr)}, &rs.m); err != nil {
			return false, fmt.Errorf("frame header does not parse: %w", err)
		}
		if len(rs.m.Payload) > 0 {
			return false, errors.New("frame header carries a payload of its own")
		}
		if rs.scratch, err = rs.r.rawChunk(st, &rs.m, rs.br, int(n), rs.scratch); err != nil {
			return false, nil // the connection failed
		}
	}
}

// rawChunk receives the n payload bytes of chunk m (its header already
// read) from br: straight into the layer buffer when it can (then checks the
// CRC: a bad one fails the chunk and the retry rewrites the region), else
// into scratch, which it returns, perhaps grown. An error means the
// connection failed.
func (r *Receiver) rawChunk(st *stream, m *tandemv1.KVChunk, br *bufio.Reader, n int, scratch []byte) ([]byte, error) {
	r.begin(st, m, n)
	pl, err := r.validate(st, m, n)
	if err != nil {
		r.reject(st, m.Seq, err)
		_, derr := br.Discard(n)
		return scratch, derr
	}
	if !r.direct(pl) {
		if cap(scratch) < n {
			scratch = make([]byte, n)
		}
		m.Payload = scratch[:n]
		if _, err := io.ReadFull(br, m.Payload); err != nil {
			return scratch, err
		}
		if crc := crc32.Checksum(m.Payload, castagnoli); crc != m.Crc32C {
			r.reject(st, m.Seq, fmt.Errorf("crc32c %08x, chunk says %08x", crc, m.Crc32C))
		} else if err := r.copyIn(st, pl, m.Payload); err != nil {
			r.reject(st, m.Seq, err)
		}
		m.Payload = nil
		return scratch, nil
	}
	k, v, err := r.pin(st, pl)
	if err != nil {
		r.reject(st, m.Seq, err)
		_, derr := br.Discard(n)
		return scratch, derr
	}
	// Checksum each piece as it lands, while it is still in cache.
	var crc uint32
	for _, part := range [2][]byte{k, v} {
		for len(part) > 0 && err == nil {
			piece := part[:min(len(part), rawPiece)]
			if _, err = io.ReadFull(br, piece); err == nil {
				crc = crc32.Update(crc, castagnoli, piece)
			}
			part = part[len(piece):]
		}
	}
	var cause error
	if err != nil {
		cause = err
	} else if crc != m.Crc32C {
		cause = fmt.Errorf("crc32c %08x, chunk says %08x", crc, m.Crc32C)
	}
	if uerr := r.unpin(st, pl, cause); uerr != nil && err == nil {
		r.reject(st, m.Seq, uerr)
	}
	return scratch, err
}

// rawConn is a Sender's connection to a receiver's raw data plane.
type rawConn struct {
	addr string
	c    net.Conn
	used time.Time // when it was last put back idle
}

// rawConn returns an idle connection to addr or dials one; errRawRefused
// when addr answers the hello with anything else.
func (s *Sender) rawConn(ctx context.Context, addr string) (*rawConn, error) {
	if rc, err := s.idleRawConn(addr); rc != nil || err != nil {
		return rc, err
	}
	c, err := s.dialRaw(ctx, addr)
	if err != nil {
		return nil, err
	}
	rc := &rawConn{addr: addr, c: c}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, errSenderClosed
	}
	s.rawBusy[rc] = struct{}{}
	return rc, nil
}

// idleRawConn takes a connection to addr from the idle ones, closing
// those idle too long; nil when there is none.
func (s *Sender) idleRawConn(addr string) (*rawConn, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errSenderClosed
	}
	var stale []*rawConn
	idle := s.rawIdle[addr]
	for len(idle) > 0 {
		rc := idle[len(idle)-1]
		idle = idle[:len(idle)-1]
		if time.Since(rc.used) < rawIdle {
			s.rawIdle[addr] = idle
			s.rawBusy[rc] = struct{}{}
			s.mu.Unlock()
			closeAll(stale)
			return rc, nil
		}
		stale = append(stale, rc)
	}
	delete(s.rawIdle, addr)
	s.mu.Unlock()
	closeAll(stale)
	return nil, nil
}

// dialRaw dials addr and, within rawHandshakeTimeout (or ctx's deadline,
// if sooner), does the TLS handshake when the sender has TLS and the raw
// data plane's hello. A receiver that answers the hello otherwise is
// errRawRefused.
func (s *Sender) dialRaw(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	setBuffers(c)
	deadline := time.Now().Add(rawHandshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	if s.opts.TLS != nil {
		// A refused handshake is a failed stream, not a receiver that does
		// not speak raw: it must not send the stream over gRPC instead.
		cfg := s.opts.TLS.Clone()
		cfg.NextProtos = nil
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("raw TLS handshake with %s: %w", addr, err)
		}
		c = tc
	}
	reply := make([]byte, len(rawReply))
	if _, err := io.WriteString(c, rawHello); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, reply); err != nil || string(reply) != rawReply {
		c.Close()
		if ctx.Err() != nil || isTimeout(err) {
			return nil, fmt.Errorf("raw hello: %w", err)
		}
		return nil, fmt.Errorf("%w (%q): %v", errRawRefused, reply, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func closeAll(rcs []*rawConn) {
	for _, rc := range rcs {
		rc.c.Close()
	}
}

// putRaw ends a push's use of rc: back to the idle pool when the stream
// ended cleanly, else closed, with every idle connection to its address
// (after one breaks, the others probably lead to a restarted receiver too).
func (s *Sender) putRaw(rc *rawConn, clean bool) {
	s.mu.Lock()
	delete(s.rawBusy, rc)
	var drop []*rawConn
	switch {
	case clean && !s.closed && len(s.rawIdle[rc.addr]) < maxIdleRaw:
		rc.used = time.Now()
		s.rawIdle[rc.addr] = append(s.rawIdle[rc.addr], rc)
	case clean:
		drop = []*rawConn{rc}
	default:
		drop = append(s.rawIdle[rc.addr], rc)
		delete(s.rawIdle, rc.addr)
	}
	s.mu.Unlock()
	closeAll(drop)
}

// rawRefused reports whether addr refused the raw hello lately.
func (s *Sender) rawRefused(addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.refused[addr]
	if ok && time.Now().After(until) {
		delete(s.refused, addr)
		return false
	}
	return ok
}

func (s *Sender) refuseRaw(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused[addr] = time.Now().Add(rawRefusedFor)
}

// rawStream sends the whole transfer once over a raw connection and checks
// the ack, like stream does over gRPC. Each layer goes out in one writev of
// frame headers and views of the layer data.
func (s *Sender) rawStream(ctx context.Context, p *push) (err error) {
	dl, hasDeadline := ctx.Deadline()
	defer func() {
		if err == nil || errors.Is(err, errRawRefused) {
			return
		}
		if hasDeadline && !time.Now().Before(dl) {
			<-ctx.Done() // the conn's deadline may pass a moment before ctx's
		}
		if ctx.Err() != nil { // say why, and so stop Push from retrying
			err = fmt.Errorf("%w (%v)", context.Cause(ctx), err)
		}
	}()
	rc, err := s.rawConn(ctx, p.spec.DestAddr)
	if err != nil {
		return err
	}
	// The conn's deadline is ctx's, and it is closed if ctx ends first.
	if hasDeadline {
		_ = rc.c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { rc.c.Close() })
	defer func() {
		clean := stop() && (err == nil || errors.Is(err, errIncompleteAck))
		if clean {
			clean = rc.c.SetDeadline(time.Time{}) == nil
		}
		s.putRaw(rc, clean)
	}()

	// A second goroutine reads layers from the source and checksums and
	// frames chunks a few ahead of the writes, so that copying and
	// checksumming overlap the kernel's copies.
	prepCtx, cancel := context.WithCancel(ctx)
	chunks := make(chan rawChunkOut, 2)
	go p.prepare(prepCtx, s, chunks)
	ended, werr := p.writeChunks(rc.c, chunks, cancel)
	cancel()
	switch {
	case werr != nil:
		return werr
	case p.prepErr != nil:
		return p.prepErr
	case !ended:
		return fmt.Errorf("stream cut short: %w", context.Cause(ctx))
	}
	return readRawAck(rc.c)
}

// writeChunks writes the chunks prepared, counting their bytes in the
// push's stats, until chunks is closed; after a failed write it cancels
// the preparation and drains what is left (prepare must be done with p
// before the stream returns). ended reports whether the end of stream
// was written.
func (p *push) writeChunks(c net.Conn, chunks <-chan rawChunkOut, cancel context.CancelFunc) (ended bool, werr error) {
	bufs := make(net.Buffers, 0, 4)
	for o := range chunks {
		if werr != nil {
			continue // drain
		}
		bufs = append(bufs[:0], o.hdr, o.k, o.v)
		if o.end {
			bufs = append(bufs, make([]byte, rawPrefixBytes)) // end of stream
		}
		if _, werr = bufs.WriteTo(c); werr != nil {
			cancel()
			continue
		}
		ended = o.end
		n := int64(len(o.k) + len(o.v))
		p.stats.Bytes += n
		p.stats.PerLayer[o.layer].Bytes += n
		if o.layerDone {
			p.stats.PerLayer[o.layer].Duration += time.Since(o.start)
		}
	}
	return ended, werr
}

// readRawAck reads the receiver's ack of a stream (a length, then a
// KVAck) and checks it.
func readRawAck(c net.Conn) error {
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		return fmt.Errorf("reading the ack: %w", err)
	}
	ln := binary.LittleEndian.Uint32(size[:])
	if ln > maxRawAck {
		return fmt.Errorf("ack of %d bytes", ln)
	}
	b := make([]byte, ln)
	if _, err := io.ReadFull(c, b); err != nil {
		return fmt.Errorf("reading the ack: %w", err)
	}
	var ack tandemv1.KVAck
	if err := proto.Unmarshal(b, &ack); err != nil {
		return fmt.Errorf("decoding the ack: %w", err)
	}
	return checkAck(&ack)
}

// rawChunkOut is a chunk framed for the raw data plane, ready to write.
type rawChunkOut struct {
	hdr, k, v []byte // frame prefix and header; the payload, views of the layer
	layer     int
	start     time.Time // when reading its layer began
	layerDone bool      // the layer's last chunk
	end       bool      // the stream's last chunk
}

// prepare reads each layer from the source (once per push), checksums and
// frames its chunks, last token block first (see "Chunks" in the package
// doc), and sends them on out, which it closes when done, when a layer
// cannot be read (p.prepErr says why) or when ctx ends.
func (p *push) prepare(ctx context.Context, s *Sender, out chan<- rawChunkOut) {
	defer close(out)
	p.prepErr = nil
	sp := p.spec
	count := uint32(sp.Layers * p.chunksPerLyr)
	seq := uint32(0)
	for l := range sp.Layers {
		start := time.Now()
		if err := p.read(s, l); err != nil {
			p.prepErr = err
			return
		}
		data := p.layers[l]
		for c := p.chunksPerLyr - 1; c >= 0; c-- {
			from, to := c*p.perChunk, min((c+1)*p.perChunk, sp.Tokens)
			k, v, h := p.chunk(data, seq, count, l, from, to)
			hdr := h.appendFields(make([]byte, rawPrefixBytes, rawPrefixBytes+96+len(sp.RequestID)))
			hdr = protowire.AppendTag(hdr, 15, protowire.Fixed32Type)
			hdr = protowire.AppendFixed32(hdr, h.crc)
			binary.LittleEndian.PutUint32(hdr, uint32(len(hdr)-rawPrefixBytes))
			binary.LittleEndian.PutUint32(hdr[4:], uint32(len(k)+len(v)))
			o := rawChunkOut{
				hdr: hdr, k: k, v: v, layer: l, start: start,
				layerDone: c == 0, end: c == 0 && l == sp.Layers-1,
			}
			select {
			case out <- o:
			case <-ctx.Done():
				return
			}
			seq++
		}
	}
}

// errIncompleteAck is wrapped by the error for an ack with complete=false.
var errIncompleteAck = errors.New("receiver acked incomplete")

func checkAck(ack *tandemv1.KVAck) error {
	if !ack.GetComplete() {
		return fmt.Errorf("%w: %s (failed chunks %s, missing chunks %s)",
			errIncompleteAck, ack.GetErrorMessage(), seqs(ack.GetFailedChunks()), seqs(ack.GetMissingChunks()))
	}
	return nil
}
