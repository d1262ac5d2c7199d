package compare

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// cancelWriter cancels once a write holding after (and a request done)
// comes: the moment a run has started sending.
type cancelWriter struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	after  string
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := string(p); strings.Contains(s, w.after) && !strings.Contains(s, " 0/") {
		w.cancel()
	}
	return len(p), nil
}

// listRequests is the number of requests the coordinator at addr saw.
func listRequests(t *testing.T, addr string) int {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := tandemv1.NewTracesClient(conn).ListRequests(t.Context(), &tandemv1.ListRequestsRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.GetRequests())
}
