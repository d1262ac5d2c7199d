// Package grpctest provides helpers for tests of Tandem's gRPC servers:
// ListServices asks a server what it serves by reflection, as
// `grpcurl list` does.
//
// It imports nothing of Tandem's, so that any package's tests can use it.
package grpctest

import (
	"testing"

	"google.golang.org/grpc"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// ListServices lists the services the server behind conn names by
// reflection; it fails t if the server does not answer.
func ListServices(t testing.TB, conn *grpc.ClientConn) []string {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names
}
