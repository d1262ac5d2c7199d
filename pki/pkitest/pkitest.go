package pkitest

import (
	"crypto/tls"
	"path/filepath"
	"testing"

	"github.com/tandemllm/tandem/pki"
)

// NewCA makes a CA in a temporary directory of tb with a certificate for
// each of names, and returns the directory.
func NewCA(tb testing.TB, names ...string) string {
	tb.Helper()
	dir := tb.TempDir()
	if _, err := pki.Init(dir, names, nil, 0); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// Files are the CA, certificate and key files of name in dir.
func Files(dir, name string) pki.Files {
	return pki.Files{CA: filepath.Join(dir, pki.CACertFile), Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
}

// Configs are the server and client configurations of the process
// holding certificate name of the CA in dir.
func Configs(tb testing.TB, dir, name string) (server, client *tls.Config) {
	tb.Helper()
	src, err := pki.Load(Files(dir, name), pki.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	client, err = src.ClientConfig()
	if err != nil {
		tb.Fatal(err)
	}
	return src.ServerConfig(), client
}
