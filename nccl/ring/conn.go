package ring

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tandemllm/tandem/nccl"
)

// Options configure a communicator. Zero fields take the defaults; every
// rank of a group must use the same SmallMessageBytes (a difference fails
// the first allreduce it splits, with a mismatch, or on groups of more
// than two with ErrPeerLost at some ranks; it is never silently mixed).
type Options struct {
	// Group names the group; a peer of another group is refused at the
	// handshake (default "": all unnamed groups match).
	Group string
	// Recorder, if not nil, receives a record of every call (default none).
	Recorder nccl.Recorder
	// SmallMessageBytes is the largest AllReduce that takes the latency
	// path, recursive doubling (⌈log2 n⌉ exchanges of the whole buffer,
	// one more when n is not a power of two), instead of the
	// bandwidth-optimal ring (default 64 KiB).
	SmallMessageBytes int
	// PeerTimeout bounds how long a peer whose host stopped answering
	// (no FIN, no RST: a dead machine, a cut cable) goes unnoticed: TCP
	// keepalive probes every PeerTimeout/4 and unacknowledged data time
	// out after PeerTimeout (default 4s). A killed process is noticed at
	// once: its kernel closes its sockets.
	PeerTimeout time.Duration
	// SocketBuffer is the send and receive buffer size asked of the
	// kernel for each connection (default 4 MiB; the kernel may cap it).
	SocketBuffer int
	// ServerTLS and ClientTLS, when set (both, or neither), make every
	// connection TLS: the accepting rank's side uses ServerTLS, the
	// dialling rank's ClientTLS. With mutual TLS (package pki) a peer
	// whose certificate the configuration refuses is refused during the
	// TLS handshake, before any byte of the ring's protocol is read
	// (default nil: plain TCP).
	ServerTLS, ClientTLS *tls.Config
	// DisableSharedMemory keeps allreduces on TCP even where every rank
	// runs on one host. By default such a group sums them through a
	// shared memory segment, as NCCL's SHM transport does (NCCL_SHM_DISABLE
	// is the NCCL equivalent); a rank that cannot map the segment (another
	// host, another PID or network namespace, another user) makes the
	// whole group use TCP.
	DisableSharedMemory bool
	// Logger receives a warning for each connection refused while the
	// group forms: a stray client, a peer of another group, a TLS
	// handshake that failed (default slog.Default()).
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.SmallMessageBytes <= 0 {
		o.SmallMessageBytes = 64 << 10
	}
	if o.PeerTimeout <= 0 {
		o.PeerTimeout = 4 * time.Second
	}
	if o.SocketBuffer <= 0 {
		o.SocketBuffer = 4 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Listener accepts the group's connections for one rank.
type Listener struct {
	ln *net.TCPListener
}

// Listen opens this rank's endpoint, e.g. "127.0.0.1:0". Its Addr is
// what the rendezvous publishes.
func Listen(addr string) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ring: listen: %w", err)
	}
	return &Listener{ln: ln.(*net.TCPListener)}, nil
}

// Addr is the address peers dial.
func (l *Listener) Addr() string { return l.ln.Addr().String() }

// Close closes the listener; Connect closes it once the group is formed.
func (l *Listener) Close() error { return l.ln.Close() }

const (
	magic        = 0x4d444e54 // "TNDM" on the wire
	protoVersion = 2          // 2: the shared-memory handshake follows the hellos
	helloBytes   = 24
)

// hello is what both ends of a new connection say: who they are and
// which group they believe in.
type hello struct {
	version uint32
	group   uint64
	size    int
	rank    int
}

func (h hello) put(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], magic)
	binary.LittleEndian.PutUint32(b[4:], h.version)
	binary.LittleEndian.PutUint64(b[8:], h.group)
	binary.LittleEndian.PutUint32(b[16:], uint32(h.size))
	binary.LittleEndian.PutUint32(b[20:], uint32(h.rank))
}

func parseHello(b []byte) (hello, bool) {
	return hello{
		version: binary.LittleEndian.Uint32(b[4:]),
		group:   binary.LittleEndian.Uint64(b[8:]),
		size:    int(int32(binary.LittleEndian.Uint32(b[16:]))),
		rank:    int(int32(binary.LittleEndian.Uint32(b[20:]))),
	}, binary.LittleEndian.Uint32(b[0:]) == magic
}

func groupID(g string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(g))
	return h.Sum64()
}

// errFatal marks handshake failures that mean the group is misconfigured
// (not a stray connection), so Connect gives up at once instead of
// waiting for its deadline.
type errFatal struct{ error }

func (e errFatal) Unwrap() error { return e.error }

// Connect forms the group: every pair of ranks shares one TCP connection,
// dialled by the higher rank. addrs holds every rank's Listener address in
// rank order. It returns when every connection is up and checked, when a
// peer's handshake shows the group is misconfigured (another size, a rank
// claimed twice), or when ctx ends — then the error names the ranks that
// never connected. Once connected, rank 0 offers the group a shared memory
// segment for its allreduces (see Options.DisableSharedMemory). ln is
// closed on return.
func Connect(ctx context.Context, ln *Listener, rank int, addrs []string, opts Options) (*Comm, error) {
	defer ln.Close()
	opts.defaults()
	size := len(addrs)
	if rank < 0 || rank >= size {
		return nil, fmt.Errorf("ring: rank %d outside a group of %d", rank, size)
	}
	if (opts.ServerTLS == nil) != (opts.ClientTLS == nil) {
		return nil, errors.New("ring: Options.ServerTLS and ClientTLS must be set together")
	}
	me := hello{version: protoVersion, group: groupID(opts.Group), size: size, rank: rank}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type result struct {
		rank int
		conn net.Conn
		err  error
	}
	results := make(chan result, 2*size)
	// deliver hands a result to the loop below; once the loop is done
	// (ctx cancelled) nobody reads, so the connection is closed instead.
	// Without this a peer that keeps redialling fills the channel and the
	// accept goroutine blocks forever.
	deliver := func(r result) bool {
		select {
		case results <- r:
			return true
		case <-ctx.Done():
			if r.conn != nil {
				r.conn.Close()
			}
			return false
		}
	}
	var wg sync.WaitGroup
	for p := range rank {
		wg.Go(func() {
			conn, err := dial(ctx, addrs[p], me, p, opts)
			deliver(result{p, conn, err})
		})
	}
	if rank < size-1 {
		stop := context.AfterFunc(ctx, func() { ln.ln.SetDeadline(time.Unix(1, 0)) })
		defer stop()
		wg.Go(func() {
			for {
				p, conn, err := accept(ctx, ln.ln, me, opts)
				if err != nil && ctx.Err() != nil {
					return
				}
				if err != nil && p < 0 && !errors.As(err, new(errFatal)) {
					opts.Logger.Warn("ring: refused a connection", "group", opts.Group, "rank", rank, "err", err)
				}
				if !deliver(result{p, conn, err}) {
					return
				}
			}
		})
	}

	conns := make([]net.Conn, size)
	var errs []error
	fatal := false
	for missing := size - 1; missing > 0 && !fatal && ctx.Err() == nil; {
		var r result
		select {
		case r = <-results:
		case <-ctx.Done():
			continue
		}
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
			fatal = fatal || errors.As(r.err, new(errFatal)) || r.rank >= 0
		case conns[r.rank] != nil:
			r.conn.Close()
			errs = append(errs, fmt.Errorf("ring: rank %d connected twice (two processes believe they are rank %d)", r.rank, r.rank))
			fatal = true
		default:
			conns[r.rank] = r.conn
			missing--
		}
	}
	cancel()
	ln.Close() // ends the accept loop
	wg.Wait()
	close(results)
	for r := range results { // connections that raced the end
		if r.conn != nil {
			r.conn.Close()
		}
	}
	var missing []string
	for p, c := range conns {
		if p != rank && c == nil {
			missing = append(missing, strconv.Itoa(p))
		}
	}
	if len(missing) > 0 {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		if ctxErr := context.Cause(ctx); !fatal && ctxErr != nil {
			errs = append(errs, ctxErr)
		}
		return nil, fmt.Errorf("ring: rank %d of %d: group not formed, no connection with rank(s) %s: %w",
			rank, size, strings.Join(missing, ", "), errors.Join(errs...))
	}
	seg, err := negotiateShm(parent, rank, conns, opts)
	if err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return nil, err
	}
	return newComm(rank, size, opts, conns, seg), nil
}

// dial connects to rank p, retrying while it is not listening yet, and
// checks that the rank answering is p of this group.
func dial(ctx context.Context, addr string, me hello, p int, opts Options) (net.Conn, error) {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			tune(c.(*net.TCPConn), opts)
			conn := c
			if opts.ClientTLS != nil {
				conn = tls.Client(c, opts.ClientTLS)
			}
			if err = clientHandshake(ctx, conn, me, p); err != nil {
				conn.Close()
				return nil, err
			}
			return conn, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ring: dialing rank %d at %s: %w", p, addr, err)
		}
		// The peer is not listening yet: retry soon, but not in a spin.
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

func clientHandshake(ctx context.Context, conn net.Conn, me hello, p int) error {
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if tc, ok := conn.(*tls.Conn); ok {
		// A TLS refusal is final: the peer is not of this cluster, or we
		// are not.
		if err := tc.HandshakeContext(ctx); err != nil {
			return errFatal{fmt.Errorf("ring: TLS handshake with rank %d at %s: %w", p, conn.RemoteAddr(), err)}
		}
	}
	var b [helloBytes + 3]byte
	me.put(b[:])
	if _, err := conn.Write(b[:helloBytes]); err != nil {
		return fmt.Errorf("ring: handshake with rank %d: %w", p, err)
	}
	// The answer: the acceptor's hello, a status byte and the length of
	// the reason it refused us, if it did.
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return fmt.Errorf("ring: handshake with rank %d at %s: %w", p, conn.RemoteAddr(), err)
	}
	if b[helloBytes] != 1 {
		reason := make([]byte, binary.LittleEndian.Uint16(b[helloBytes+1:]))
		io.ReadFull(conn, reason)
		return errFatal{fmt.Errorf("ring: rank %d refused rank %d: %s", p, me.rank, reason)}
	}
	them, _ := parseHello(b[:])
	if them.rank != p || them.size != me.size || them.group != me.group {
		return errFatal{fmt.Errorf("ring: rank %d dialled rank %d at %s but found rank %d of a group of %d (of the same group: %v)",
			me.rank, p, conn.RemoteAddr(), them.rank, them.size, them.group == me.group)}
	}
	conn.SetDeadline(time.Time{})
	return nil
}

// accept takes one connection and checks its handshake. A connection that
// is not a Tandem ring peer of this group is refused with a reason it can
// read and an error; a peer of this group that disagrees on the group's
// size, or claims a rank that should not dial here, makes the error
// fatal: the group is misconfigured and waiting cannot help.
func accept(ctx context.Context, ln *net.TCPListener, me hello, opts Options) (int, net.Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		ln.SetDeadline(dl)
	}
	tcp, err := ln.AcceptTCP()
	if err != nil {
		return -1, nil, fmt.Errorf("ring: accepting peers: %w", err)
	}
	tune(tcp, opts)
	var conn net.Conn = tcp
	// A stray client that sends nothing must not hold up the group.
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if opts.ServerTLS != nil {
		tc := tls.Server(tcp, opts.ServerTLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			tcp.Close()
			return -1, nil, fmt.Errorf("ring: TLS handshake from %s: %w", tcp.RemoteAddr(), err)
		}
		conn = tc
	}
	var b [helloBytes + 3]byte
	if _, err := io.ReadFull(conn, b[:helloBytes]); err != nil {
		conn.Close()
		return -1, nil, fmt.Errorf("ring: handshake from %s: %w", conn.RemoteAddr(), err)
	}
	them, ok := parseHello(b[:])
	var reason string
	peer := -1
	switch {
	case !ok || them.version != protoVersion:
		reason = "not a tandem ring peer of this protocol version"
	case them.group != me.group:
		reason = "peer belongs to another group"
	case them.size != me.size:
		reason = fmt.Sprintf("rank %d says the group has %d ranks, rank %d says %d", them.rank, them.size, me.rank, me.size)
		peer = them.rank
	case them.rank <= me.rank || them.rank >= me.size:
		reason = fmt.Sprintf("a peer claims rank %d; rank %d accepts only ranks %d..%d", them.rank, me.rank, me.rank+1, me.size-1)
		peer = them.rank
	}
	me.put(b[:])
	if reason != "" {
		b[helloBytes] = 0
		binary.LittleEndian.PutUint16(b[helloBytes+1:], uint16(len(reason)))
		conn.Write(append(b[:], reason...))
		conn.Close()
		err := fmt.Errorf("ring: rank %d refused %s: %s", me.rank, conn.RemoteAddr(), reason)
		if peer >= 0 {
			return -1, nil, errFatal{err}
		}
		return -1, nil, err
	}
	b[helloBytes] = 1
	if _, err := conn.Write(b[:]); err != nil {
		conn.Close()
		return -1, nil, fmt.Errorf("ring: handshake with rank %d: %w", them.rank, err)
	}
	conn.SetDeadline(time.Time{})
	return them.rank, conn, nil
}
