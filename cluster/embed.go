package cluster

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Embedded is an etcd server running in this process.
type Embedded struct {
	etcd *embed.Etcd
}

// EmbeddedOptions configure StartEmbedded. Zero fields take the defaults.
type EmbeddedOptions struct {
	// ClientAddr is the client listen address (default 127.0.0.1:0, a
	// free port).
	ClientAddr string
	// StartTimeout bounds the wait for the server to be ready (default 30s).
	StartTimeout time.Duration
}

// StartEmbedded starts a single-member etcd server keeping its data in
// dir, and waits until it serves.
func StartEmbedded(ctx context.Context, dir string, opts EmbeddedOptions) (*Embedded, error) {
	if opts.ClientAddr == "" {
		opts.ClientAddr = "127.0.0.1:0"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	// etcd logs expected shutdown noise at error level; failures to start
	// are returned instead.
	cfg.LogLevel = "panic"
	client, err := url.Parse("http://" + opts.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client address %q: %w", opts.ClientAddr, err)
	}
	peer, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: starting embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &Embedded{etcd: e}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("cluster: embedded etcd: %w", err)
	case <-time.After(opts.StartTimeout):
		e.Close()
		return nil, fmt.Errorf("cluster: embedded etcd not ready after %v", opts.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
}

// Endpoints are the client URLs to dial.
func (e *Embedded) Endpoints() []string {
	var out []string
	for _, l := range e.etcd.Clients {
		out = append(out, "http://"+l.Addr().String())
	}
	return out
}

// Close stops the server.
func (e *Embedded) Close() { e.etcd.Close() }
