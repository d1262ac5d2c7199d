package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/pki/pkitest"
)

// An embedded etcd with mutual TLS serves a client holding a certificate
// of its CA, and refuses one without a certificate or with one another CA
// signed, on one member and on several.
func TestEmbeddedTLS(t *testing.T) {
	dir, other := pkitest.NewCA(t, "etcd", "worker"), pkitest.NewCA(t, "worker")
	client := func(d, name string) *tls.Config {
		_, c := pkitest.Configs(t, d, name)
		return c
	}
	stranger := client(other, "worker")
	stranger.VerifyPeerCertificate = nil // it would refuse the server first: only etcd decides here
	for _, members := range []int{1, 3} {
		t.Run(fmt.Sprintf("members=%d", members), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			ef := pkitest.Files(dir, "etcd")
			e, err := StartEmbedded(ctx, t.TempDir(), EmbeddedOptions{Members: members, TLS: &EmbeddedTLS{CA: ef.CA, Cert: ef.Cert, Key: ef.Key}})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			for _, ep := range e.Endpoints() {
				if !strings.HasPrefix(ep, "https://") {
					t.Fatalf("endpoint %s is not https", ep)
				}
			}
			member, err := DialTLS(e.Endpoints(), client(dir, "worker"))
			if err != nil {
				t.Fatal(err)
			}
			defer member.Close()
			if _, err := member.Put(ctx, "/tandem/test", "v"); err != nil {
				t.Fatalf("a member's Put: %v", err)
			}
			for name, cfg := range map[string]*tls.Config{
				"no certificate": {InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
				"another CA":     stranger,
				"plain text":     nil,
			} {
				cli, err := DialTLS(e.Endpoints(), cfg)
				if err != nil {
					if !errors.Is(err, ErrTLSRefused) {
						t.Errorf("%s: %v, want ErrTLSRefused", name, err)
					}
					continue // refused at once, saying why
				}
				if cfg != nil {
					t.Errorf("%s: DialTLS did not see the refusal", name)
				}
				sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
				_, err = cli.Get(sctx, "/tandem/test")
				scancel()
				cli.Close()
				if err == nil {
					t.Errorf("%s: a Get succeeded", name)
				}
			}
			if _, err := member.Get(ctx, "/tandem/test"); err != nil {
				t.Fatalf("the member after the strangers: %v", err)
			}
		})
	}
}
