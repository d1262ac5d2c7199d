package ring

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/tandemllm/tandem/nccl"
)

// loopbackPair is one tuned TCP connection on loopback, both ends.
func loopbackPair(b *testing.B) (*net.TCPConn, *net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	a := <-accepted
	if a == nil {
		b.Fatal("accept failed")
	}
	var o Options
	o.defaults()
	tune(d.(*net.TCPConn), o)
	tune(a.(*net.TCPConn), o)
	return d.(*net.TCPConn), a.(*net.TCPConn)
}

// rawLoopback measures the machine's own limits in this run: the
// throughput of one TCP stream on loopback (GB/s, median of 5 runs of
// 256 MiB in 4 MiB writes) and the round-trip time of a 32-byte ping-pong
// (median of 5 means over 500 round trips).
func rawLoopback(b *testing.B) (gbps float64, rtt time.Duration) {
	w, r := loopbackPair(b)
	defer w.Close()
	defer r.Close()
	const chunk, total = 4 << 20, 256 << 20
	src, dst := make([]byte, chunk), make([]byte, chunk)
	var rates []float64
	for range 5 {
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			for range total / chunk {
				if _, err := w.Write(src); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		for range total / chunk {
			if _, err := io.ReadFull(r, dst); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		rates = append(rates, total/time.Since(start).Seconds()/1e9)
	}
	var rtts []time.Duration
	ping := make([]byte, headerBytes)
	echo := make(chan error, 1)
	go func() {
		buf := make([]byte, headerBytes)
		for range 5 * 500 {
			if _, err := io.ReadFull(r, buf); err != nil {
				echo <- err
				return
			}
			if _, err := r.Write(buf); err != nil {
				echo <- err
				return
			}
		}
		echo <- nil
	}()
	for range 5 {
		start := time.Now()
		for range 500 {
			w.Write(ping)
			if _, err := io.ReadFull(w, ping); err != nil {
				b.Fatal(err)
			}
		}
		rtts = append(rtts, time.Since(start)/500)
	}
	if err := <-echo; err != nil {
		b.Fatal(err)
	}
	slices.Sort(rates)
	slices.Sort(rtts)
	return rates[2], rtts[2]
}

// BenchmarkAllReduce reports bus bandwidth as nccl-tests computes it
// (algbw = bytes/time, busbw = algbw·2(n-1)/n) next to the raw loopback
// stream measured in the same run, and the time of small allreduces in
// loopback round trips.
func BenchmarkAllReduce(b *testing.B) {
	raw, rtt := rawLoopback(b)
	b.Logf("raw loopback: one stream %.2f GB/s, round trip %v", raw, rtt)
	for _, n := range []int{2, 4, 8} {
		for size := 4 << 10; size <= 64<<20; size *= 4 {
			b.Run(fmt.Sprintf("n=%d/%s", n, byteSize(size)), func(b *testing.B) {
				comms := newGroup(b, n, nil)
				bufs := make([][]float32, n)
				for r := range bufs {
					bufs[r] = make([]float32, size/4)
				}
				b.SetBytes(int64(size))
				b.ResetTimer()
				errs := onAll(n, func(r int) error {
					for range b.N {
						if err := comms[r].AllReduce(context.Background(), nccl.Float32s(bufs[r])); err != nil {
							return err
						}
					}
					return nil
				})
				b.StopTimer()
				for r, err := range errs {
					if err != nil {
						b.Fatalf("rank %d: %v", r, err)
					}
				}
				per := b.Elapsed().Seconds() / float64(b.N)
				bus := float64(size) / per / 1e9 * 2 * float64(n-1) / float64(n)
				b.ReportMetric(bus, "busGB/s")
				b.ReportMetric(raw, "rawGB/s")
				b.ReportMetric(100*bus/raw, "%raw")
				b.ReportMetric(per/rtt.Seconds(), "RTTs")
			})
		}
	}
}

func byteSize(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}
