package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemllm/tandem/apikey"
	"github.com/tandemllm/tandem/pki"
)

// clientFlags are how a command reaches a coordinator's gRPC API:
// --addr, TLS and an API key.
type clientFlags struct {
	addr   string
	tls    bool
	caCert string
	apiKey string
}

// register adds the flags, --addr defaulting to def.
func (f *clientFlags) register(fl *pflag.FlagSet, def string) {
	fl.StringVar(&f.addr, "addr", def, "the coordinator's gRPC address")
	fl.BoolVar(&f.tls, "tls", false, "connect with TLS, checking the coordinator's certificate against the system's roots or --ca-cert")
	fl.StringVar(&f.caCert, "ca-cert", "", "PEM CA certificate the coordinator's certificate must chain to (implies --tls)")
	fl.StringVar(&f.apiKey, "api-key", "", "API key sent as authorization: Bearer KEY (default: $TANDEM_API_KEY)")
}

// dial connects (lazily) to the coordinator.
func (f *clientFlags) dial() (*grpc.ClientConn, error) {
	opts, err := f.dialOptions()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(f.addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("--addr %q: %w", f.addr, err)
	}
	return conn, nil
}

func (f *clientFlags) dialOptions() ([]grpc.DialOption, error) {
	creds := insecure.NewCredentials()
	if f.tls || f.caCert != "" {
		cfg, err := pki.ClientRoots(f.caCert, "") // the server name is the host of --addr
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		creds = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	key := f.apiKey
	if key == "" {
		key = os.Getenv("TANDEM_API_KEY")
	}
	if key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(apikey.PerRPC(key)))
	}
	return opts, nil
}
