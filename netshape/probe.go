package netshape

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"time"
)

// probe measures the path's own one-way latency between node 0 and node
// 1 (or this namespace and node 0, with one node): half the median round
// trip of 200 ping-pongs of 32 bytes over TCP, after 20 to warm up. It is
// also New's check that the nodes reach each other.
func (n *Network) probe(ctx context.Context) (time.Duration, error) {
	const warm, samples, size = 20, 200, 32
	var ln net.Listener
	if err := n.Do(0, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(n.nodes[0].Addr, "0"))
		return err
	}); err != nil {
		return 0, err
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)
	echoed := make(chan error, 1)
	go func() { echoed <- echo(ln, deadline, size) }()
	var c net.Conn
	dial := func() (err error) {
		dctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		var d net.Dialer
		c, err = d.DialContext(dctx, "tcp", ln.Addr().String())
		return err
	}
	var err error
	if len(n.nodes) > 1 {
		err = n.Do(1, dial)
	} else {
		err = dial()
	}
	if err != nil {
		ln.Close()
		<-echoed
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	buf := make([]byte, size)
	rtts := make([]time.Duration, 0, samples)
	for i := range warm + samples {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return 0, err
		}
		if i >= warm {
			rtts = append(rtts, time.Since(start))
		}
	}
	c.Close()
	if err := <-echoed; err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2] / 2, nil
}

// echo accepts one connection on ln and sends back what it reads, size
// bytes at a time, until the peer closes.
func echo(ln net.Listener, deadline time.Time, size int) error {
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	buf := make([]byte, size)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
}
