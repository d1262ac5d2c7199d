package coordinator

import (
	"context"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/apikey"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// KeyChecker is what the coordinator needs of a set of API keys
// (apikey.Set): whether a presented key is one of them.
type KeyChecker interface {
	Valid(key string) bool
}

// openPaths are the HTTP paths served without a key unless
// ProtectMetrics: the probes and the Prometheus scrape.
var openPaths = map[string]bool{"/healthz": true, "/livez": true, "/readyz": true, "/metrics": true}

// openMethods are the gRPC methods called without a key unless
// ProtectMetrics: the health services.
var openMethods = map[string]bool{
	"/" + healthpb.Health_ServiceDesc.ServiceName + "/Check": true,
	"/" + healthpb.Health_ServiceDesc.ServiceName + "/List":  true,
	"/" + healthpb.Health_ServiceDesc.ServiceName + "/Watch": true,
	tandemv1.Generation_Health_FullMethodName:                true,
}

// Messages of a refusal; they never repeat what the client sent.
const (
	msgNoKey  = "missing API key: send the header Authorization: Bearer KEY"
	msgBadKey = "invalid API key"
)

// keyError says what is wrong with an Authorization value, or "" if it
// carries a valid key.
func (c *Coordinator) keyError(authorization string) string {
	if authorization == "" {
		return msgNoKey
	}
	key, ok := apikey.Bearer(authorization)
	if !ok || !c.opts.APIKeys.Valid(key) {
		return msgBadKey
	}
	return ""
}

// RequireAPIKey wraps h, the whole public HTTP surface (the OpenAI API,
// the trace pages, /metrics), so that a request without a valid key gets
// 401 and an OpenAI-style error before its body is read. The probes and
// /metrics stay open unless ProtectMetrics. Without API keys it returns h.
func (c *Coordinator) RequireAPIKey(h http.Handler) http.Handler {
	if c.opts.APIKeys == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.opts.ProtectMetrics && openPaths[r.URL.Path] {
			h.ServeHTTP(w, r)
			return
		}
		msg := c.keyError(r.Header.Get("Authorization"))
		if msg == "" {
			h.ServeHTTP(w, r)
			return
		}
		c.metrics.Unauthenticated("http")
		w.Header().Set("WWW-Authenticate", `Bearer realm="tandem"`)
		writeError(w, &apiError{status: http.StatusUnauthorized, typ: "invalid_request_error", code: "invalid_api_key", message: msg})
	})
}

// ServerOptions are the options the public gRPC server needs: with API
// keys, interceptors that refuse a call without the metadata
// "authorization: Bearer KEY" with UNAUTHENTICATED, before its request is
// read. The health services stay open unless ProtectMetrics.
func (c *Coordinator) ServerOptions() []grpc.ServerOption {
	if c.opts.APIKeys == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := c.authorize(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := c.authorize(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	}
}

func (c *Coordinator) authorize(ctx context.Context, method string) error {
	if !c.opts.ProtectMetrics && openMethods[method] {
		return nil
	}
	var authorization string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			authorization = v[0]
		}
	}
	if msg := c.keyError(authorization); msg != "" {
		c.metrics.Unauthenticated("grpc")
		if msg == msgNoKey {
			msg = "missing API key: send the metadata authorization: Bearer KEY"
		}
		return status.Error(codes.Unauthenticated, msg)
	}
	return nil
}

// updateHealthLocked sets the gRPC health status from whether the model
// can be served now. Called with c.mu held, whenever a group's
// routability may have changed.
func (c *Coordinator) updateHealthLocked() {
	if c.routingMoved != nil {
		close(c.routingMoved)
		c.routingMoved = nil // WaitRoutable makes the next
	}
	serving := c.servableLocked() == nil
	if serving == c.healthServing {
		return
	}
	c.healthServing = serving
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, name := range []string{"", tandemv1.Generation_ServiceDesc.ServiceName} {
		c.grpcHealth.SetServingStatus(name, st)
	}
}
