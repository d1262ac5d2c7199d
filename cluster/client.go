package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Dial makes an etcd client for Tandem's processes: it spreads over every
// endpoint given (losing one member of several interrupts nothing), finds
// a dead member within a few seconds (keepalive pings), reconnects within
// a second of etcd coming back (the gRPC default backs off up to two
// minutes), and keeps quiet: the etcd client's own logs would repeat
// every retry of an outage, which Registered and Membership report once.
func Dial(endpoints []string) (*clientv3.Client, error) {
	return DialTLS(endpoints, nil)
}

// ErrTLSRefused is wrapped when an etcd member refuses this process's
// certificate, or this process the member's: a process of another
// cluster, or one given the wrong files.
var ErrTLSRefused = errors.New("cluster: etcd refused the TLS handshake")

// DialTLS is Dial over TLS with tlsConfig (mutual TLS against the
// cluster's CA: package pki); nil dials in plain text. With TLS it first
// shakes hands with each member it can reach and fails at once, wrapping
// ErrTLSRefused, if one refuses: the etcd client would otherwise retry
// for ever with nothing but a deadline to show for it. Members it cannot
// reach are left to the client, as in an outage.
func DialTLS(endpoints []string, tlsConfig *tls.Config) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("cluster: no etcd endpoint")
	}
	if tlsConfig != nil {
		for _, ep := range endpoints {
			if err := probeTLS(ep, tlsConfig); err != nil {
				return nil, err
			}
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		TLS:                  tlsConfig,
		Endpoints:            endpoints,
		DialTimeout:          10 * time.Second,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd at %v: %w", endpoints, err)
	}
	return cli, nil
}

// ErrBadPrefix is wrapped when a key prefix cannot root a cluster's keys.
var ErrBadPrefix = errors.New("cluster: bad etcd key prefix")

// CheckPrefix reports whether prefix can root a cluster's keys: empty
// (none), or a path that starts with "/", does not end with one and holds
// no space or control character, such as "/serving/tandem-a".
func CheckPrefix(prefix string) error {
	switch {
	case prefix == "":
		return nil
	case !strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/"):
		return fmt.Errorf("%w %q: want a path such as /NAMESPACE/RELEASE, starting with / and not ending with one", ErrBadPrefix, prefix)
	case strings.IndexFunc(prefix, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return fmt.Errorf("%w %q: spaces and control characters are not allowed", ErrBadPrefix, prefix)
	}
	return nil
}

// Namespace roots every key cli reads, writes, watches and leases under
// prefix (checked by CheckPrefix; empty leaves cli as it is), so clusters
// given different prefixes share one etcd without seeing each other's
// members or rendezvous. Call it once, before cli is used.
func Namespace(cli *clientv3.Client, prefix string) error {
	if err := CheckPrefix(prefix); err != nil || prefix == "" {
		return err
	}
	cli.KV = namespace.NewKV(cli.KV, prefix)
	cli.Watcher = namespace.NewWatcher(cli.Watcher, prefix)
	cli.Lease = namespace.NewLease(cli.Lease, prefix)
	return nil
}

// probeTLS shakes hands with the etcd member at endpoint (a URL) and
// reads for a moment: with TLS 1.3 a server that refuses the client's
// certificate says so in an alert after the client's side of the
// handshake is done.
func probeTLS(endpoint string, cfg *tls.Config) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return fmt.Errorf("cluster: etcd endpoint %q: not a URL", endpoint)
	}
	if u.Scheme != "https" {
		return fmt.Errorf("cluster: etcd endpoint %s: TLS needs an https URL", endpoint)
	}
	c, err := net.DialTimeout("tcp", u.Host, 3*time.Second)
	if err != nil {
		return nil // unreachable: the client's affair, as in an outage
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrTLSRefused, endpoint, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := tc.Read(make([]byte, 1)); err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return fmt.Errorf("%w: %s: %v", ErrTLSRefused, endpoint, err)
		}
	}
	return nil
}
