//go:build unix

package kvtransfer

import (
	"context"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tandemllm/tandem/parallel"
	"github.com/tandemllm/tandem/pki"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// preread is a Source whose layers are ready in memory, as a finished
// prefill's KV cache is: ReadLayer is one copy.
type preread [][]byte

func (p preread) ReadLayer(layer int, _ parallel.Range, dst []byte) error {
	copy(dst, p[layer])
	return nil
}

// rawTCP measures single-stream loopback TCP: one connection, the writer
// sends 4 MiB buffers for about d, the reader discards. It returns bytes per
// second and CPU seconds per GB (both ends).
func rawTCP(b *testing.B, d time.Duration) (rate, cpuPerGB float64) {
	cpu0 := cpuTime()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer lis.Close()
	read := make(chan int64, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			read <- 0
			return
		}
		defer c.Close()
		n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 1<<20))
		read <- n
	}()
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4<<20)
	start := time.Now()
	for time.Since(start) < d {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	n := <-read
	return float64(n) / time.Since(start).Seconds(), (cpuTime() - cpu0).Seconds() / (float64(n) / 1e9)
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkKVTransfer pushes a 2048-token prompt of llama-160m's shape
// (12 layers, 8 KV heads, head_dim 64: in float32 8 MiB a layer, 96 MiB a
// request; half that in bfloat16) from one Sender to one Receiver of the
// same dtype over loopback, through the raw TCP data plane (the default) and
// through gRPC, and compares the rate with raw loopback TCP measured in the
// same run. ms/transfer is one request's whole KV, pushed and assembled.
// The -tls cases are the same over mutual TLS, as inside a cluster.
func BenchmarkKVTransfer(b *testing.B) {
	ca := newCA(b)
	for _, tc := range []struct {
		name, over string
		opts       SenderOptions
		tls        bool
	}{
		{"raw", "the raw data plane", SenderOptions{}, false},
		{"grpc", "gRPC", SenderOptions{DisableRaw: true}, false},
		{"raw-tls", "the raw data plane over mutual TLS", SenderOptions{}, true},
		{"grpc-tls", "gRPC over mutual TLS", SenderOptions{DisableRaw: true}, true},
	} {
		for _, dt := range []tandemv1.DataType{tandemv1.DataType_DATA_TYPE_FLOAT32, tandemv1.DataType_DATA_TYPE_BFLOAT16} {
			name := map[tandemv1.DataType]string{tandemv1.DataType_DATA_TYPE_FLOAT32: "fp32", tandemv1.DataType_DATA_TYPE_BFLOAT16: "bf16"}[dt]
			var mo MuxOptions
			var extra []grpc.ServerOption
			if tc.tls {
				tc.opts.TLS = newIdentity(b, ca, "prefill").client
				mo.TLS = newIdentity(b, ca, "decode").server
				extra = append(extra, grpc.Creds(pki.Terminated()))
			}
			b.Run(tc.name+"/"+name, func(b *testing.B) { benchmarkKVTransfer(b, tc.over, tc.opts, dt, mo, extra...) })
		}
	}
}

func benchmarkKVTransfer(b *testing.B, over string, opts SenderOptions, dt tandemv1.DataType, mo MuxOptions, extra ...grpc.ServerOption) {
	const layers, tokens, kvHeads, hd = 12, 2048, 8, 64
	heads := parallel.Range{From: 0, To: kvHeads}
	src := make(preread, layers)
	for l := range src {
		f := make([]float32, 2*tokens*kvHeads*hd)
		fill(f, l, tokens, heads, hd)
		src[l] = le32(f)
		if dt == tandemv1.DataType_DATA_TYPE_BFLOAT16 {
			src[l] = le16(f)
		}
	}
	r, addr := serveMux(b, ReceiverOptions{Rank: 0, Heads: heads, HeadDim: hd, Layers: layers, MaxTokens: tokens, DType: dt}, mo, extra...)
	s := newSender(b, opts)
	ctx := context.Background()
	bytesPerReq := int64(layers * 2 * tokens * kvHeads * hd * ElemSize(dt))
	transfer := func(i int) {
		id := fmt.Sprintf("bench-%d", i)
		done := make(chan error, 1)
		go func() {
			got, err := r.Await(ctx, Expect{RequestID: id, Attempt: 1, Tokens: tokens, SourceTP: 1, KVHeads: kvHeads, DestTP: 1})
			r.Recycle(got) // as a worker does once the KV is in its cache
			done <- err
		}()
		st, err := s.Push(ctx, src, SendSpec{
			RequestID: id, Attempt: 1, DestAddr: addr,
			Layers: layers, Tokens: tokens, Heads: heads, HeadDim: hd, DType: dt,
		})
		if err != nil {
			b.Fatal(err)
		}
		if st.Bytes != bytesPerReq || st.Retries != 0 {
			b.Fatalf("pushed %d bytes in %d retries, want %d in 0", st.Bytes, st.Retries, bytesPerReq)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	transfer(-1) // dial and warm up

	// Raw TCP before and after, averaged: on a shared machine the load
	// changes during the run.
	raw, rawCPU := rawTCP(b, 250*time.Millisecond)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := range b.N {
		transfer(i)
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	cpuPerGB := cpu.Seconds() / (float64(bytesPerReq) * float64(b.N) / 1e9)
	raw2, rawCPU2 := rawTCP(b, 250*time.Millisecond)
	raw, rawCPU = (raw+raw2)/2, (rawCPU+rawCPU2)/2
	rate := float64(bytesPerReq) * float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate/1e6, "MB/s")
	b.ReportMetric(100*rate/raw, "%_of_raw_tcp")
	b.ReportMetric(cpuPerGB, "cpu-s/GB")
	b.ReportMetric(elapsed.Seconds()*1e3/float64(b.N), "ms/transfer")
	b.Logf("kvtransfer: %.0f MB/s (%.1f ms a %d-token prompt, %d MiB) over %s vs %.0f MB/s raw TCP loopback (%.0f%%); CPU %.2f vs %.2f s/GB",
		rate/1e6, elapsed.Seconds()*1e3/float64(b.N), tokens, bytesPerReq>>20, over, raw/1e6, 100*rate/raw, cpuPerGB, rawCPU)
}
