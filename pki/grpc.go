package pki

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
)

// Terminated returns the transport credentials of a gRPC server whose
// connections have completed their TLS handshake before the server gets
// them (a listener shared with another protocol does the handshake and
// then tells the two apart). Each connection must be a *tls.Conn or wrap
// one (a NetConn method); the server sees its TLS state as a peer's
// AuthInfo, as it would with credentials.NewTLS. Anything else is refused.
func Terminated() credentials.TransportCredentials { return terminated{} }

type terminated struct{}

func (terminated) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("pki: terminated TLS credentials are for servers only")
}

func (terminated) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	for inner := c; inner != nil; {
		if tc, ok := inner.(*tls.Conn); ok {
			return c, credentials.TLSInfo{State: tc.ConnectionState(),
				CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
		}
		w, ok := inner.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		inner = w.NetConn()
	}
	return nil, nil, errors.New("pki: connection did not come through TLS")
}

func (terminated) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (t terminated) Clone() credentials.TransportCredentials { return t }

func (terminated) OverrideServerName(string) error { return nil }
