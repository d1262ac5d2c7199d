package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// Embedded is an etcd cluster of one or more members running in this
// process.
type Embedded struct {
	mu      sync.Mutex
	members []*embed.Etcd // nil once stopped
	clients []string      // each member's client URL, stopped or not
}

// EmbeddedOptions configure StartEmbedded. Zero fields take the defaults.
type EmbeddedOptions struct {
	// Members is the number of etcd members (default 1). With 3 or more,
	// losing one leaves a quorum: the cluster goes on serving.
	Members int
	// ClientAddr is the client listen address (default 127.0.0.1:0, a
	// free port). With several members its port must be 0: each member
	// gets a free port of its host.
	ClientAddr string
	// StartTimeout bounds the wait for the cluster to be ready (default 30s).
	StartTimeout time.Duration
	// TLS, when set, makes the client and peer URLs https with mutual TLS:
	// a client without a certificate the CA file signed is refused at the
	// handshake (default nil: plain http).
	TLS *EmbeddedTLS
}

// EmbeddedTLS are the PEM files of an embedded etcd's mutual TLS: the CA
// its clients' and peers' certificates must chain to, and its own
// certificate (which it also presents to its peers) and key.
type EmbeddedTLS struct {
	CA, Cert, Key string
}

// StartEmbedded starts an etcd cluster of opts.Members members keeping
// their data in dir (member i in dir/member-i when there are several),
// and waits until it serves. A single member restarted on the same dir
// and ClientAddr finds its data and leases again.
func StartEmbedded(ctx context.Context, dir string, opts EmbeddedOptions) (*Embedded, error) {
	if opts.Members == 0 {
		opts.Members = 1
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.ClientAddr == "" {
		opts.ClientAddr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(opts.ClientAddr)
	switch {
	case err != nil:
		return nil, fmt.Errorf("cluster: etcd client address %q: %w", opts.ClientAddr, err)
	case opts.Members < 1:
		return nil, fmt.Errorf("cluster: %d etcd members: want at least 1", opts.Members)
	case opts.Members > 1 && port != "0":
		return nil, fmt.Errorf("cluster: etcd client address %q: several members need port 0 (each takes a free port of %s)", opts.ClientAddr, host)
	}
	// Several members' ports are picked before etcd binds them, so
	// another process can take one in between: the start is tried again
	// on other ports, without the data directories the failed try made.
	var fresh []string
	if opts.Members > 1 {
		for i := range opts.Members {
			d := memberDir(dir, i, opts.Members)
			if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
				fresh = append(fresh, d)
			}
		}
	}
	for try := 1; ; try++ {
		cfgs, err := memberConfigs(dir, opts)
		if err != nil {
			return nil, err
		}
		e, err := startMembers(ctx, cfgs, opts.StartTimeout)
		if err == nil || opts.Members == 1 || try == portTries || !errors.Is(err, syscall.EADDRINUSE) {
			return e, err
		}
		for _, d := range fresh {
			if err := os.RemoveAll(d); err != nil {
				return nil, fmt.Errorf("cluster: removing %s after a failed etcd start: %w", d, err)
			}
		}
	}
}

// portTries is how many times StartEmbedded picks ports for several
// members when one was taken before etcd could bind it.
const portTries = 3

// startMembers starts one etcd member per configuration and waits until
// every one is ready. On failure every member it started is stopped.
func startMembers(ctx context.Context, cfgs []*embed.Config, timeout time.Duration) (*Embedded, error) {
	e := &Embedded{}
	for _, cfg := range cfgs {
		m, err := embed.StartEtcd(cfg)
		if err != nil {
			e.abort()
			return nil, fmt.Errorf("cluster: starting embedded etcd member %s: %w", cfg.Name, err)
		}
		e.members = append(e.members, m)
		e.clients = append(e.clients, cfg.AdvertiseClientUrls[0].Scheme+"://"+m.Clients[0].Addr().String())
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, m := range e.members {
		select {
		case <-m.Server.ReadyNotify():
		case err := <-m.Err():
			e.abort()
			return nil, fmt.Errorf("cluster: embedded etcd: %w", err)
		case <-deadline.C:
			e.abort()
			return nil, fmt.Errorf("cluster: embedded etcd not ready after %v", timeout)
		case <-ctx.Done():
			e.abort()
			return nil, ctx.Err()
		}
	}
	return e, nil
}

// abort stops members that may never have become ready. etcd's Close
// waits for a member's client servers, which start once the member is
// ready or stopping; a member short of a quorum (its peers failed to
// start) is neither, and Close hung. StopMember's hard stop makes it
// stopping first.
func (e *Embedded) abort() {
	for i := range e.members {
		_ = e.StopMember(i) // every member here is running: no error
	}
}

// memberDir is where member i of n keeps its data.
func memberDir(dir string, i, n int) string {
	if n == 1 {
		return dir
	}
	return filepath.Join(dir, fmt.Sprintf("member-%d", i))
}

// memberConfigs makes each member's configuration. Several members must
// know each other's peer URLs before they start, so their ports are
// picked (bound and released) first.
func memberConfigs(dir string, opts EmbeddedOptions) ([]*embed.Config, error) {
	n := opts.Members
	peers := []string{"127.0.0.1:0"}
	clients := []string{opts.ClientAddr}
	if n > 1 {
		host, _, _ := net.SplitHostPort(opts.ClientAddr)
		var err error
		if peers, err = freePorts("127.0.0.1", n); err != nil {
			return nil, fmt.Errorf("cluster: picking ports for %d etcd members: %w", n, err)
		}
		if clients, err = freePorts(host, n); err != nil {
			return nil, fmt.Errorf("cluster: picking ports for %d etcd members: %w", n, err)
		}
	}
	scheme := "http://"
	if opts.TLS != nil {
		scheme = "https://"
	}
	var initial []string
	var cfgs []*embed.Config
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Dir = memberDir(dir, i, n)
		if n > 1 {
			cfg.Name = filepath.Base(cfg.Dir)
		}
		// etcd logs expected shutdown noise at error level; failures to
		// start are returned instead.
		cfg.LogLevel = "panic"
		client, err := url.Parse(scheme + clients[i])
		if err != nil {
			return nil, fmt.Errorf("cluster: etcd client address %q: %w", clients[i], err)
		}
		peer, _ := url.Parse(scheme + peers[i])
		if t := opts.TLS; t != nil {
			cfg.ClientTLSInfo = transport.TLSInfo{CertFile: t.Cert, KeyFile: t.Key, TrustedCAFile: t.CA, ClientCertAuth: true}
			cfg.PeerTLSInfo = cfg.ClientTLSInfo
			cfg.ClientAutoTLS, cfg.PeerAutoTLS = false, false
		}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
		initial = append(initial, cfg.Name+"="+peer.String())
		cfgs = append(cfgs, cfg)
	}
	for _, cfg := range cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "tandem"
	}
	return cfgs, nil
}

// freePorts returns n distinct free addresses of host: bound together,
// then released for the members to take.
func freePorts(host string, n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// Endpoints are the client URLs of every member, stopped ones included
// (clients skip those that do not answer).
func (e *Embedded) Endpoints() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.clients...)
}

// Members is the number of members the cluster started with.
func (e *Embedded) Members() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.members)
}

// Leader is the index of the member that leads now, or -1 when the
// running members know of none.
func (e *Embedded) Leader() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, m := range e.members {
		if m != nil && m.Server.Leader() == m.Server.MemberID() {
			return i
		}
	}
	return -1
}

// StopMember stops member i at once, as a crash would (no leadership
// handed over), and releases its ports. The others go on while they keep
// a quorum.
func (e *Embedded) StopMember(i int) error {
	e.mu.Lock()
	if i < 0 || i >= len(e.members) || e.members[i] == nil {
		e.mu.Unlock()
		return fmt.Errorf("cluster: no running etcd member %d", i)
	}
	m := e.members[i]
	e.members[i] = nil
	e.mu.Unlock()
	m.Server.HardStop()
	m.Close()
	return nil
}

// Close stops every member still running.
func (e *Embedded) Close() {
	e.mu.Lock()
	ms := e.members
	e.members = make([]*embed.Etcd, len(ms))
	e.mu.Unlock()
	for _, m := range ms {
		if m != nil {
			m.Close()
		}
	}
}
