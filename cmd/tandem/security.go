package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/tandemllm/tandem/apikey"
	"github.com/tandemllm/tandem/pki"
)

// publicFlags secure the public APIs: API keys and TLS (coordinator, up).
type publicFlags struct {
	apiKeys        []string
	apiKeysFile    string
	protectMetrics bool
	tlsCert        string
	tlsKey         string
}

func (f *publicFlags) register(fl *pflag.FlagSet) {
	fl.StringArrayVar(&f.apiKeys, "api-key", nil, "an API key the public APIs accept (repeatable): HTTP Authorization: Bearer KEY, gRPC metadata authorization: Bearer KEY; without keys the APIs are open (a key on the command line shows in ps: prefer --api-keys-file)")
	fl.StringVar(&f.apiKeysFile, "api-keys-file", "", "file of API keys, one a line (# comments), read again on SIGHUP")
	fl.BoolVar(&f.protectMetrics, "protect-metrics", false, "put /metrics and the health probes (/healthz, /readyz, gRPC health) behind the API keys too")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) of the public gRPC and HTTP listeners: TLS on both, reloaded when the file changes")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	// vLLM's names for the same files.
	fl.StringVar(&f.tlsCert, "ssl-certfile", "", "the same as --tls-cert (vLLM's name)")
	fl.StringVar(&f.tlsKey, "ssl-keyfile", "", "the same as --tls-key (vLLM's name)")
}

// load reads the keys and the certificate; either is nil when not asked
// for.
func (f *publicFlags) load() (*apikey.Set, *pki.Source, error) {
	keys, err := apikey.New(f.apiKeys, f.apiKeysFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--api-key/--api-keys-file: %w", err)
	}
	if f.protectMetrics && keys == nil {
		return nil, nil, errors.New("--protect-metrics needs --api-key or --api-keys-file")
	}
	if f.tlsCert == "" && f.tlsKey == "" {
		return keys, nil, nil
	}
	if f.tlsCert == "" || f.tlsKey == "" {
		return nil, nil, errors.New("--tls-cert and --tls-key go together")
	}
	src, err := pki.Load(pki.Files{Cert: f.tlsCert, Key: f.tlsKey}, pki.Options{})
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	return keys, src, nil
}

// reloadKeysOnHUP re-reads the keys file on each SIGHUP until stop.
func reloadKeysOnHUP(keys *apikey.Set) (stop func()) {
	if keys == nil || keys.File() == "" {
		return func() {}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				if n, err := keys.Reload(); err != nil {
					slog.Error("API keys not reloaded; the previous ones stay", "file", keys.File(), "err", err)
				} else {
					slog.Info("API keys reloaded", "file", keys.File(), "keys", n)
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

// internalFlags are the files of a process's mutual TLS inside the
// cluster (coordinator, worker).
type internalFlags struct{ ca, cert, key string }

func (f *internalFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.ca, "internal-ca", "", "PEM CA certificate of the cluster: mutual TLS on every internal connection (worker gRPC, KV, ring, etcd) with --internal-cert and --internal-key; peers must hold a certificate it signed (tandem certs init)")
	fl.StringVar(&f.cert, "internal-cert", "", "PEM certificate of this process, signed by --internal-ca")
	fl.StringVar(&f.key, "internal-key", "", "PEM private key of --internal-cert")
}

// internalTLS is a process's mutual TLS inside the cluster.
type internalTLS struct {
	files          pki.Files
	server, client *tls.Config
}

// load reads the files; nil without any (plain TCP inside the cluster).
func (f *internalFlags) load() (*internalTLS, error) {
	if f.ca == "" && f.cert == "" && f.key == "" {
		return nil, nil
	}
	for _, fl := range []struct{ name, v string }{{"--internal-ca", f.ca}, {"--internal-cert", f.cert}, {"--internal-key", f.key}} {
		if fl.v == "" {
			return nil, fmt.Errorf("%s is missing: --internal-ca, --internal-cert and --internal-key go together", fl.name)
		}
	}
	files := pki.Files{CA: f.ca, Cert: f.cert, Key: f.key}
	src, err := pki.Load(files, pki.Options{})
	if err != nil {
		return nil, fmt.Errorf("--internal-ca/--internal-cert/--internal-key: %w", err)
	}
	client, err := src.ClientConfig()
	if err != nil {
		return nil, err
	}
	return &internalTLS{files: files, server: src.ServerConfig(), client: client}, nil
}

// args are the flags giving a child process these files.
func (f *internalFlags) args() []string {
	if f.ca == "" {
		return nil
	}
	return []string{"--internal-ca", f.ca, "--internal-cert", f.cert, "--internal-key", f.key}
}

// clientTLS is t's client configuration; nil for plain TCP.
func (t *internalTLS) clientTLS() *tls.Config {
	if t == nil {
		return nil
	}
	return t.client
}

// serverTLS is t's server configuration; nil for plain TCP.
func (t *internalTLS) serverTLS() *tls.Config {
	if t == nil {
		return nil
	}
	return t.server
}
