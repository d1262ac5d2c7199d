package chaos

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tandemllm/tandem/kvtransfer"
	"github.com/tandemllm/tandem/parallel"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// layers is a kvtransfer.Source of a byte pattern per layer.
type layers struct{}

func (layers) ReadLayer(layer int, _ parallel.Range, dst []byte) error {
	for i := range dst {
		dst[i] = byte(layer*31 + i*7)
	}
	return nil
}

// Through the proxy, a KV push arrives whole whatever the armed fault
// does to its frames (the sender retries, the receiver checks), each
// fault hits exactly the frames it was armed for, and gRPC passes.
func TestProxyFaults(t *testing.T) {
	const nLayers, tokens, hd = 3, 8, 4
	heads := parallel.Range{From: 0, To: 2}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	recv := kvtransfer.NewReceiver(kvtransfer.ReceiverOptions{Rank: 0, Heads: heads, HeadDim: hd, Layers: nLayers, MaxTokens: 64})
	srv := grpc.NewServer(kvtransfer.ServerOptions()...)
	tandemv1.RegisterKVTransferServer(srv, recv)
	grpcLis, rawLis := kvtransfer.Mux(lis, kvtransfer.MuxOptions{})
	go func() { _ = srv.Serve(grpcLis) }()
	rawDone := make(chan error, 1)
	go func() { rawDone <- recv.ServeRaw(rawLis) }()
	defer func() {
		srv.Stop()
		<-rawDone
	}()
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var faults kvFaults
	p := startProxy(pln, lis.Addr().String(), &faults)
	defer p.close()

	for i, tc := range []struct {
		name  string
		fault kvFault
		grpc  bool
	}{{"pass", kvPass, false}, {"corrupt", kvCorrupt, false}, {"drop", kvDrop, false}, {"delay", kvDelay, false}, {"grpc", kvPass, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			var hit <-chan struct{}
			if tc.fault != kvPass {
				hit = faults.arm(tc.fault, 2)
			}
			before := p.frames.Load()
			s := kvtransfer.NewSender(kvtransfer.SenderOptions{DisableRaw: tc.grpc})
			defer s.Close()
			id := fmt.Sprintf("req-%d", i)
			start := time.Now()
			if _, err := s.Push(ctx, layers{}, kvtransfer.SendSpec{RequestID: id, Attempt: 1, DestAddr: p.ln.Addr().String(),
				Layers: nLayers, Tokens: tokens, Heads: heads, HeadDim: hd, MaxChunkBytes: 64}); err != nil {
				t.Fatalf("push through the proxy: %v", err)
			}
			kv, err := recv.Await(ctx, kvtransfer.Expect{RequestID: id, Attempt: 1, Tokens: tokens, SourceTP: 1, KVHeads: 2, DestTP: 1})
			if err != nil {
				t.Fatal(err)
			}
			if len(kv) != nLayers {
				t.Fatalf("%d layers arrived", len(kv))
			}
			for l, got := range kv {
				want := make([]byte, len(got))
				_ = layers{}.ReadLayer(l, heads, want)
				if !bytes.Equal(got, want) {
					t.Fatalf("layer %d arrived changed", l)
				}
			}
			frames := p.frames.Load() - before
			switch {
			case tc.grpc && frames != 0:
				t.Fatalf("%d raw frames counted for a gRPC push", frames)
			case !tc.grpc && frames == 0:
				t.Fatal("the push bypassed the proxy")
			}
			if hit != nil {
				select {
				case <-hit:
				default:
					t.Fatal("the armed frames were not all hit")
				}
			}
			if tc.fault == kvDelay && time.Since(start) < 2*kvDelayBy {
				t.Fatalf("two delayed frames took only %v", time.Since(start))
			}
			if faults.take() != kvPass {
				t.Fatal("the fault outlived its frames")
			}
		})
	}
}
