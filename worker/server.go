package worker

import (
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/tandemllm/tandem/kvtransfer"
	"github.com/tandemllm/tandem/pki"
)

// newServer makes the rank's gRPC server: KV transfer's options,
// keepalive, telemetry and transport security, with the standard
// grpc.health.v1.Health service (NOT_SERVING until the rank is ready, see
// ready) and server reflection, so that grpcurl and gRPC health probes
// work against every rank. shared says the port is shared with the raw KV
// data plane, whose Mux ends TLS before gRPC sees a connection.
func (w *Worker) newServer(shared bool) *grpc.Server {
	opts := append(append(kvtransfer.ServerOptions(), serverKeepalive...), w.opts.Telemetry.ServerOptions()...)
	switch {
	case w.opts.ServerTLS != nil && shared:
		opts = append(opts, grpc.Creds(pki.Terminated()))
	case w.opts.ServerTLS != nil:
		opts = append(opts, grpc.Creds(credentials.NewTLS(w.opts.ServerTLS)))
	}
	srv := grpc.NewServer(opts...)
	w.health = health.NewServer()
	w.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, w.health)
	reflection.Register(srv)
	return srv
}

// setHealth sets the status of the server as a whole ("") and of each of
// the rank's own services.
func (w *Worker) setHealth(srv *grpc.Server, st healthpb.HealthCheckResponse_ServingStatus) {
	w.health.SetServingStatus("", st)
	for name := range srv.GetServiceInfo() {
		if !strings.HasPrefix(name, "grpc.") { // health and reflection themselves
			w.health.SetServingStatus(name, st)
		}
	}
}
