package cluster

import (
	"context"
	"errors"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"
)

// A member that cannot bind its port fails the start of a cluster of
// three with an error that says so, instead of hanging in the stop of the
// member already started (which, short of a quorum, never became ready),
// and that member's ports are free again afterwards.
func TestStartMembersPortTaken(t *testing.T) {
	cfgs, err := memberConfigs(t.TempDir(), EmbeddedOptions{Members: 3, ClientAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	u, _ := url.Parse("http://" + taken.Addr().String())
	cfgs[1].ListenClientUrls = []url.URL{*u}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		e   *Embedded
		err error
	}
	done := make(chan result, 1)
	go func() {
		e, err := startMembers(ctx, cfgs, 30*time.Second)
		done <- result{e, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(45 * time.Second):
		t.Fatal("startMembers did not return after a member failed to bind its port")
	}
	if r.err == nil {
		r.e.Close()
		t.Fatal("started a cluster whose second member's client port was taken")
	}
	if !errors.Is(r.err, syscall.EADDRINUSE) {
		t.Fatalf("error %v does not say the address is in use", r.err)
	}
	for _, u := range append(cfgs[0].ListenClientUrls, cfgs[0].ListenPeerUrls...) {
		l, err := net.Listen("tcp", u.Host)
		if err != nil {
			t.Fatalf("member-0's %s still bound after the failed start: %v", u.Host, err)
		}
		l.Close()
	}
}
