package pki

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cluster is a CA directory made by Init with certificates "a" and "b".
func cluster(t *testing.T) (string, *CA) {
	t.Helper()
	dir := t.TempDir()
	ca, err := Init(dir, []string{"a", "b"}, []string{"node.example", "10.1.2.3"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return dir, ca
}

func load(t *testing.T, f Files) *Source {
	t.Helper()
	s, err := Load(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func files(dir, name string) Files {
	return Files{CA: filepath.Join(dir, CACertFile), Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
}

// handshake runs one TLS handshake between the two configurations over a
// real loopback connection and returns each side's error.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		err = tc.HandshakeContext(t.Context())
		if err == nil { // TLS 1.3: the client's certificate is checked after the client's handshake ends; read to see the verdict
			_, err = io.ReadFull(tc, make([]byte, 1))
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, client)
	clientErr = tc.HandshakeContext(t.Context())
	if clientErr == nil {
		_, _ = tc.Write([]byte{1})
		// A server that refused us says so in an alert: read it.
		_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := tc.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
			clientErr = err
		}
	}
	return <-done, clientErr
}

func TestMutualTLS(t *testing.T) {
	dir, _ := cluster(t)
	other, _ := cluster(t)
	a, b := load(t, files(dir, "a")), load(t, files(dir, "b"))
	stranger := load(t, files(other, "a"))
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	clientOf := func(s *Source) *tls.Config {
		c, err := s.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name           string
		server, client *tls.Config
		ok             bool
		want           string // in the server's error
	}{
		{"same CA", a.ServerConfig(), clientOf(b), true, ""},
		{"client without certificate", a.ServerConfig(), noCert, false, "certificate"},
		{"client of another CA", a.ServerConfig(), trustAll(clientOf(stranger)), false, "not signed by the cluster's CA"},
		{"server of another CA", stranger.ServerConfig(), clientOf(a), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serr, cerr := handshake(t, tc.server, tc.client)
			if tc.ok {
				if serr != nil || cerr != nil {
					t.Fatalf("server: %v, client: %v", serr, cerr)
				}
				return
			}
			if serr == nil && cerr == nil {
				t.Fatal("handshake succeeded")
			}
			if tc.want != "" && (serr == nil || !strings.Contains(serr.Error(), tc.want)) {
				t.Fatalf("server error %v, want one containing %q", serr, tc.want)
			}
		})
	}
}

func TestPublicServerChecksHostNames(t *testing.T) {
	dir, _ := cluster(t)
	pub := load(t, Files{Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "a.key")})
	if pub.Mutual() {
		t.Fatal("a source without a CA asks clients for certificates")
	}
	for _, tc := range []struct {
		name, caFile, host string
		ok                 bool
	}{
		{"its CA and an IP it names", filepath.Join(dir, CACertFile), "127.0.0.1", true},
		{"its CA and a DNS name it names", filepath.Join(dir, CACertFile), "node.example", true},
		{"a name it does not carry", filepath.Join(dir, CACertFile), "elsewhere.example", false},
		{"system roots", "", "127.0.0.1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ClientRoots(tc.caFile, tc.host)
			if err != nil {
				t.Fatal(err)
			}
			_, cerr := handshake(t, pub.ServerConfig(), cfg)
			if (cerr == nil) != tc.ok {
				t.Fatalf("client error %v, want success %v", cerr, tc.ok)
			}
		})
	}
}

func TestReload(t *testing.T) {
	dir, ca := cluster(t)
	f := files(dir, "a")
	var logs bytes.Buffer
	s, err := Load(f, Options{ReloadInterval: time.Nanosecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	first := s.current().cert.Leaf.SerialNumber
	// A half-written pair (a new certificate, the old key) is not used.
	cert, key, err := ca.Issue("a", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f.Cert, cert)
	for range 3 {
		if got := s.current().cert.Leaf.SerialNumber; got.Cmp(first) != 0 {
			t.Fatalf("a certificate without its key was loaded (serial %v)", got)
		}
	}
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Fatalf("the bad pair was reported %d times, want once:\n%s", n, logs.String())
	}
	write(t, f.Key, key)
	if got := s.current().cert.Leaf.SerialNumber; got.Cmp(first) == 0 {
		t.Fatal("the new certificate was not loaded")
	}
	// A server configured before the change presents the new certificate.
	cfg := s.ServerConfig()
	got, err := cfg.GetCertificate(nil)
	if err != nil || got.Leaf.SerialNumber.Cmp(first) == 0 {
		t.Fatalf("server presents serial %v (%v), want the new one", got.Leaf.SerialNumber, err)
	}
	// A CA replaced by another makes the old peers untrusted.
	other, _ := cluster(t)
	for _, name := range []string{CACertFile, "a.crt", "a.key"} {
		data, err := os.ReadFile(filepath.Join(other, name))
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, name), data)
	}
	serr, _ := handshake(t, s.ServerConfig(), mustClient(t, load(t, Files{CA: filepath.Join(other, CACertFile), Cert: filepath.Join(other, "b.crt"), Key: filepath.Join(other, "b.key")})))
	if serr != nil {
		t.Fatalf("a client of the new CA is refused after the reload: %v", serr)
	}
	oldPair, err := tls.LoadX509KeyPair(filepath.Join(dir, "b.crt"), filepath.Join(dir, "b.key")) // still of the first CA
	if err != nil {
		t.Fatal(err)
	}
	oldClient := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{oldPair}}
	if serr, _ := handshake(t, s.ServerConfig(), oldClient); serr == nil {
		t.Fatal("a client of the replaced CA is still accepted")
	}
}

// trustAll makes cfg accept any server, so that only the server decides.
func trustAll(cfg *tls.Config) *tls.Config {
	cfg.VerifyPeerCertificate = nil
	return cfg
}

func mustClient(t *testing.T, s *Source) *tls.Config {
	t.Helper()
	c, err := s.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// write replaces path's contents as an editor or a mounted Secret does:
// a new file renamed over the old.
func write(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir, _ := cluster(t)
	other, _ := cluster(t)
	for _, tc := range []struct {
		name string
		f    Files
		want string
	}{
		{"nothing", Files{}, "no certificate and key"},
		{"no key", Files{Cert: filepath.Join(dir, "a.crt")}, "without a key"},
		{"missing file", Files{Cert: filepath.Join(dir, "nope.crt"), Key: filepath.Join(dir, "a.key")}, "nope.crt"},
		{"key of another certificate", Files{Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "b.key")}, "a.crt with key"},
		{"CA that did not sign it", Files{CA: filepath.Join(other, CACertFile), Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "a.key")}, "not signed by the CA"},
		{"CA file without certificates", Files{CA: filepath.Join(dir, "a.key"), Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "a.key")}, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.f, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	pub := load(t, Files{Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "a.key")})
	if _, err := pub.ClientConfig(); err == nil {
		t.Fatal("a client configuration without the cluster's CA")
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	dir, _ := cluster(t)
	before, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(dir, []string{"c"}, nil, 0); !errors.Is(err, ErrExists) {
		t.Fatalf("Init over an existing CA: %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if !bytes.Equal(before, after) {
		t.Fatal("the CA key was replaced")
	}
	if _, err := os.Stat(filepath.Join(dir, "c.crt")); err == nil {
		t.Fatal("a certificate was written although Init failed")
	}
	info, err := os.Stat(filepath.Join(dir, "a.key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("a.key mode %v (%v), want 0600", info.Mode().Perm(), err)
	}
	ca, err := LoadCA(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.IssueFiles(dir, "later", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(f, Options{}); err != nil {
		t.Fatalf("a certificate issued by the reloaded CA: %v", err)
	}
	if _, err := LoadCA(filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")); err == nil {
		t.Fatal("LoadCA took a leaf certificate")
	}
}
