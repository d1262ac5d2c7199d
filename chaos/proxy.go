package chaos

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemllm/tandem/kvtransfer"
)

// kvFault is what the proxies do to the next KV frames.
type kvFault int

const (
	kvPass    kvFault = iota
	kvCorrupt         // flip a payload byte: the receiver's checksum fails
	kvDrop            // leave the frame out: the receiver misses a chunk
	kvDelay           // hold the frame back for kvDelayBy
)

// kvDelayBy is how long kv-delay holds a frame back.
const kvDelayBy = 2 * time.Second

// kvFaults is the fault every proxy shares: the next frames left of it.
type kvFaults struct {
	mu   sync.Mutex
	kind kvFault
	left int
	hit  chan struct{} // closed when the last frame has been hit
}

// arm makes the next n frames, through any proxy, suffer kind. The
// returned channel is closed once they have.
func (f *kvFaults) arm(kind kvFault, n int) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kind, f.left, f.hit = kind, n, make(chan struct{})
	return f.hit
}

// take returns what to do with the next frame.
func (f *kvFaults) take() kvFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.left == 0 {
		return kvPass
	}
	if f.left--; f.left == 0 {
		close(f.hit)
	}
	return f.kind
}

// proxy forwards one rank's port: gRPC connections untouched, the raw KV
// data plane frame by frame, through faults.
type proxy struct {
	ln     net.Listener
	target string
	faults *kvFaults
	frames atomic.Int64 // KV frames forwarded or dropped

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startProxy(ln net.Listener, target string, faults *kvFaults) *proxy {
	p := &proxy{ln: ln, target: target, faults: faults, conns: map[net.Conn]struct{}{}}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.serve(c) })
		}
	})
	return p
}

// track records an open connection so close can end it; false once the
// proxy is closing.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) serve(c net.Conn) {
	defer c.Close()
	if !p.track(c) {
		return
	}
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return // the rank is down: the caller sees a refused connection soon enough
	}
	defer s.Close()
	if !p.track(s) {
		return
	}
	p.wg.Go(func() {
		_, _ = io.Copy(c, s)
		c.Close()
	})
	magic := []byte(kvtransfer.RawHello[:10])
	head := make([]byte, len(magic))
	if _, err := io.ReadFull(c, head); err != nil {
		return
	}
	if !bytes.Equal(head, magic) { // gRPC (or anything else): pass it on
		if _, err := s.Write(head); err == nil {
			_, _ = io.Copy(s, c)
		}
		return
	}
	rest := make([]byte, len(kvtransfer.RawHello)-len(magic))
	if _, err := io.ReadFull(c, rest); err != nil {
		return
	}
	if _, err := s.Write(append(head, rest...)); err != nil {
		return
	}
	p.forwardFrames(c, s)
}

// forwardFrames forwards the raw data plane's frames from c to s, each through
// the armed fault.
func (p *proxy) forwardFrames(c, s net.Conn) {
	var prefix [kvtransfer.RawPrefixBytes]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(c, prefix[:]); err != nil {
			return
		}
		hl, n := binary.LittleEndian.Uint32(prefix[:4]), binary.LittleEndian.Uint32(prefix[4:])
		if hl == 0 && n == 0 { // end of a stream
			if _, err := s.Write(prefix[:]); err != nil {
				return
			}
			continue
		}
		size := int(hl) + int(n)
		if size > 64<<20 {
			return // out of step: so would the receiver be
		}
		if cap(buf) < kvtransfer.RawPrefixBytes+size {
			buf = make([]byte, kvtransfer.RawPrefixBytes+size)
		}
		frame := buf[:kvtransfer.RawPrefixBytes+size]
		copy(frame, prefix[:])
		if _, err := io.ReadFull(c, frame[kvtransfer.RawPrefixBytes:]); err != nil {
			return
		}
		p.frames.Add(1)
		switch p.faults.take() {
		case kvDrop:
			continue
		case kvCorrupt:
			if n > 0 {
				frame[len(frame)-1-int(n)/2] ^= 0x5a
			}
		case kvDelay:
			time.Sleep(kvDelayBy)
		}
		if _, err := s.Write(frame); err != nil {
			return
		}
	}
}
