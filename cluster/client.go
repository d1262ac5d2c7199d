package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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

// DialTLS is Dial over TLS with tlsConfig (mutual TLS against the
// cluster's CA: package pki); nil dials in plain text.
func DialTLS(endpoints []string, tlsConfig *tls.Config) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("cluster: no etcd endpoint")
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
