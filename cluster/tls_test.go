package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/pki"
)

// An embedded etcd with mutual TLS serves a client holding a certificate
// of its CA, and refuses one without a certificate or with one another CA
// signed, on one member and on several.
func TestEmbeddedTLS(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	for _, d := range []string{dir, other} {
		if _, err := pki.Init(d, []string{"etcd", "worker"}, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	files := func(d, name string) pki.Files {
		return pki.Files{CA: filepath.Join(d, pki.CACertFile), Cert: filepath.Join(d, name+".crt"), Key: filepath.Join(d, name+".key")}
	}
	client := func(f pki.Files) *tls.Config {
		src, err := pki.Load(f, pki.Options{})
		if err != nil {
			t.Fatal(err)
		}
		c, err := src.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	stranger := client(files(other, "worker"))
	stranger.VerifyPeerCertificate = nil // it would refuse the server first: only etcd decides here
	for _, members := range []int{1, 3} {
		t.Run(fmt.Sprintf("members=%d", members), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			ef := files(dir, "etcd")
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
			member, err := DialTLS(e.Endpoints(), client(files(dir, "worker")))
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
