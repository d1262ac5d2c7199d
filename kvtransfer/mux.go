package kvtransfer

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"
)

// peekTimeout bounds how long Mux waits for a new connection's first bytes.
// gRPC clients, and Senders, write theirs at once.
const peekTimeout = 10 * time.Second

// MuxOptions configure Mux. Zero fields take the defaults.
type MuxOptions struct {
	// TLS, when set, makes every connection TLS with this server
	// configuration before anything else: with mutual TLS (package pki) a
	// peer without a certificate of the cluster's CA is refused at the
	// handshake, before any of its bytes is parsed, and logged. The gRPC
	// server then takes connections whose handshake is done: give it
	// pki.Terminated() credentials. "h2" is added to the protocols offered
	// by ALPN, as gRPC clients require it (default nil: plain TCP).
	TLS *tls.Config
	// Logger receives a warning for each connection refused (default
	// slog.Default()).
	Logger *slog.Logger
}

// Mux splits the connections accepted from ln between a gRPC server and
// [Receiver.ServeRaw], so one port serves both: a connection whose first
// bytes are the raw data plane's hello goes to raw, anything else (the
// HTTP/2 client preface of gRPC) to grpcLis. With TLS the first bytes are
// those inside TLS. Each connection's first bytes are read again by
// whoever accepts it. Closing either listener closes ln and both.
func Mux(ln net.Listener, opts MuxOptions) (grpcLis, rawLis net.Listener) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.TLS != nil && !slices.Contains(opts.TLS.NextProtos, "h2") {
		opts.TLS = opts.TLS.Clone()
		opts.TLS.NextProtos = append(opts.TLS.NextProtos, "h2")
	}
	m := &mux{ln: ln, opts: opts, done: make(chan struct{})}
	g, r := &muxListener{m: m, ch: make(chan net.Conn)}, &muxListener{m: m, ch: make(chan net.Conn)}
	go m.serve(g, r)
	return g, r
}

type mux struct {
	ln   net.Listener
	opts MuxOptions
	done chan struct{}
	once sync.Once
}

func (m *mux) close() error {
	err := net.ErrClosed
	m.once.Do(func() {
		close(m.done)
		err = m.ln.Close()
	})
	return err
}

func (m *mux) serve(g, r *muxListener) {
	defer m.close()
	var backoff time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			// Out of file descriptors and the like: wait and go on.
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
					continue
				case <-m.done:
					t.Stop()
					return
				}
			}
			return
		}
		backoff = 0
		go m.route(c, g, r)
	}
}

// route reads just enough of c to tell raw from gRPC and hands it over,
// after a TLS handshake when there is TLS.
func (m *mux) route(c net.Conn, g, r *muxListener) {
	if m.opts.TLS != nil {
		_ = c.SetDeadline(time.Now().Add(peekTimeout))
		tc := tls.Server(c, m.opts.TLS)
		if err := tc.Handshake(); err != nil {
			m.opts.Logger.Warn("kvtransfer: refused a connection at its TLS handshake", "peer", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		_ = c.SetDeadline(time.Time{})
		c = tc
	}
	_ = c.SetReadDeadline(time.Now().Add(peekTimeout))
	buf := make([]byte, len(rawMagic))
	n, raw := 0, true
	for raw && n < len(buf) {
		k, err := c.Read(buf[n:])
		n += k
		raw = bytes.Equal(buf[:n], []byte(rawMagic[:n]))
		if err != nil && raw { // closed or silent before saying what it is
			c.Close()
			return
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	to := g
	if raw {
		to = r
	}
	select {
	case to.ch <- &peekConn{Conn: c, peeked: buf[:n]}:
	case <-m.done:
		c.Close()
	}
}

// muxListener is one side of a Mux.
type muxListener struct {
	m  *mux
	ch chan net.Conn
}

func (l *muxListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.m.done:
		return nil, net.ErrClosed
	}
}

func (l *muxListener) Close() error   { return l.m.close() }
func (l *muxListener) Addr() net.Addr { return l.m.ln.Addr() }

// peekConn is a connection whose first bytes Mux has read: Read returns
// them again before reading on.
type peekConn struct {
	net.Conn
	peeked []byte
}

func (c *peekConn) Read(p []byte) (int, error) {
	if len(c.peeked) > 0 {
		n := copy(p, c.peeked)
		c.peeked = c.peeked[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn is the accepted connection.
func (c *peekConn) NetConn() net.Conn { return c.Conn }
