package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Files names the PEM files of one process's TLS identity.
type Files struct {
	// CA holds the certificates a peer's must chain to (the cluster's CA).
	// Empty for a public listener, which asks clients for no certificate.
	CA string
	// Cert is this process's certificate (chain), Key its private key.
	Cert, Key string
}

// Options configure Load. Zero fields take the defaults.
type Options struct {
	// ReloadInterval is how often, at most, the files are read again to
	// see whether they changed (default 1s).
	ReloadInterval time.Duration
	// Logger receives a warning when changed files do not load (default
	// slog.Default()).
	Logger *slog.Logger
}

// Source is a TLS identity loaded from Files and reloaded when they
// change. It is safe for concurrent use.
type Source struct {
	files Files
	opts  Options

	mu      sync.Mutex // held while reading the files
	checked time.Time
	read    [3][]byte // the files' contents last loaded (CA, cert, key)
	failed  [3][]byte // contents that failed to load, so the warning is logged once

	cur atomic.Pointer[identity]
}

// identity is one loaded generation of the files.
type identity struct {
	cert *tls.Certificate
	pool *x509.CertPool // nil without a CA file
}

// Load reads files once (an error names the file at fault) and returns a
// Source that reloads them as they change.
func Load(files Files, opts Options) (*Source, error) {
	switch {
	case files.Cert == "" && files.Key == "":
		return nil, errors.New("pki: no certificate and key files")
	case files.Cert == "":
		return nil, fmt.Errorf("pki: a key (%s) without a certificate file", files.Key)
	case files.Key == "":
		return nil, fmt.Errorf("pki: a certificate (%s) without a key file", files.Cert)
	}
	if opts.ReloadInterval <= 0 {
		opts.ReloadInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Source{files: files, opts: opts}
	raw, err := s.readFiles()
	if err != nil {
		return nil, err
	}
	id, err := s.parse(raw)
	if err != nil {
		return nil, err
	}
	s.read, s.checked = raw, time.Now()
	s.cur.Store(id)
	return s, nil
}

// Files are the files s loads.
func (s *Source) Files() Files { return s.files }

// Mutual reports whether s has a CA, so that its server configuration
// asks clients for certificates.
func (s *Source) Mutual() bool { return s.files.CA != "" }

func (s *Source) readFiles() ([3][]byte, error) {
	var raw [3][]byte
	for i, name := range [3]string{s.files.CA, s.files.Cert, s.files.Key} {
		if name == "" {
			continue
		}
		b, err := os.ReadFile(name)
		if err != nil {
			return raw, fmt.Errorf("pki: %w", err)
		}
		raw[i] = b
	}
	return raw, nil
}

func (s *Source) parse(raw [3][]byte) (*identity, error) {
	cert, err := tls.X509KeyPair(raw[1], raw[2])
	if err != nil {
		return nil, fmt.Errorf("pki: certificate %s with key %s: %w", s.files.Cert, s.files.Key, err)
	}
	id := &identity{cert: &cert}
	if s.files.CA != "" {
		cas, err := parseCerts(raw[0])
		if err != nil {
			return nil, fmt.Errorf("pki: CA file %s: %w", s.files.CA, err)
		}
		id.pool = x509.NewCertPool()
		for _, c := range cas {
			id.pool.AddCert(c)
		}
		// A certificate its own CA does not sign is a configuration error
		// every peer would report less clearly.
		leaf := cert.Leaf
		inter := x509.NewCertPool()
		for _, der := range cert.Certificate[1:] {
			if c, err := x509.ParseCertificate(der); err == nil {
				inter.AddCert(c)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: id.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, fmt.Errorf("pki: certificate %s is not signed by the CA in %s: %w", s.files.Cert, s.files.CA, err)
		}
	}
	return id, nil
}

// current is the identity to use now, after reading the files again if
// ReloadInterval has passed. A handshake never waits for another's read.
func (s *Source) current() *identity {
	if !s.mu.TryLock() {
		return s.cur.Load()
	}
	defer s.mu.Unlock()
	if time.Since(s.checked) < s.opts.ReloadInterval {
		return s.cur.Load()
	}
	s.checked = time.Now()
	raw, err := s.readFiles()
	if err == nil && same(raw, s.read) {
		return s.cur.Load()
	}
	if err == nil && same(raw, s.failed) {
		return s.cur.Load() // already reported
	}
	if err == nil {
		var id *identity
		if id, err = s.parse(raw); err == nil {
			s.read = raw
			s.cur.Store(id)
			s.opts.Logger.Info("TLS certificate reloaded", "cert", s.files.Cert, "ca", s.files.CA)
			return id
		}
		s.failed = raw
	}
	s.opts.Logger.Warn("TLS files changed but do not load; keeping the previous certificate", "err", err)
	return s.cur.Load()
}

func same(a, b [3][]byte) bool {
	return bytes.Equal(a[0], b[0]) && bytes.Equal(a[1], b[1]) && bytes.Equal(a[2], b[2])
}

// ServerConfig configures a listener presenting s's certificate, offering
// nextProtos by ALPN. With a CA it is mutual TLS 1.3: a client must
// present a certificate that chains to the CA, or the handshake fails.
// Without one it is TLS 1.2 or later and asks for no client certificate
// (a public API).
func (s *Source) ServerConfig(nextProtos ...string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		},
	}
	if s.Mutual() {
		cfg.MinVersion = tls.VersionTLS13
		cfg.DynamicRecordSizingDisabled = true
		// Verified below against the CA loaded now, not the one at start.
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return s.verify(raw, x509.ExtKeyUsageClientAuth)
		}
	}
	return cfg
}

// ClientConfig configures a connection to another process of the cluster,
// offering nextProtos by ALPN: it presents s's certificate and accepts a
// server whose certificate chains to s's CA, whatever its host names. s
// must have a CA.
func (s *Source) ClientConfig(nextProtos ...string) (*tls.Config, error) {
	if !s.Mutual() {
		return nil, fmt.Errorf("pki: %s: a client inside the cluster needs the cluster's CA file", s.files.Cert)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: nextProtos,
		// Inside the cluster throughput matters, not the first byte's
		// latency over a slow start: full-size records from the start.
		DynamicRecordSizingDisabled: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		},
		// The chain is checked below, against the CA loaded now; host
		// names are not checked (see the package doc).
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return s.verify(raw, x509.ExtKeyUsageServerAuth)
		},
	}, nil
}

// ErrUntrusted is wrapped when a peer's certificate does not chain to the
// cluster's CA.
var ErrUntrusted = errors.New("pki: peer certificate not signed by the cluster's CA")

func (s *Source) verify(raw [][]byte, usage x509.ExtKeyUsage) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: no certificate", ErrUntrusted)
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUntrusted, err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: s.current().pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrUntrusted, certs[0].Subject.CommonName, err)
	}
	return nil
}

// ClientRoots configures a client of a public API: the server's
// certificate is checked against the CA certificates in caFile (empty:
// the system's roots) and its host names against serverName.
func ClientRoots(caFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	certs, err := parseCerts(bytes.TrimSpace(data))
	if err != nil {
		return nil, fmt.Errorf("pki: CA file %s: %w", caFile, err)
	}
	cfg.RootCAs = x509.NewCertPool()
	for _, c := range certs {
		cfg.RootCAs.AddCert(c)
	}
	return cfg, nil
}
