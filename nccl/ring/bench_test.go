package ring

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/nccl"
)

// loopbackPair is one tuned TCP connection on loopback, both ends.
func loopbackPair(b testing.TB) (*net.TCPConn, *net.TCPConn) {
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

// rawLimits are the machine's own limits, measured in the same run as
// the allreduces they are compared with.
type rawLimits struct {
	single float64       // GB/s of one TCP stream on loopback
	bidir  float64       // GB/s each way of two streams at once, one each way
	rtt    time.Duration // round trip of a 32-byte ping-pong
	// ring[n] is the GB/s of each link of a ring of n raw streams all
	// running at once (rank r streaming to rank r+1): what the links of a
	// ring allreduce can carry on this machine, with nothing added or
	// copied beyond the kernel's work. busbw is what each link carries.
	ring map[int]float64
}

// stream sends total bytes from w to r in 4 MiB writes, read in 4 MiB
// reads, and returns how long it took.
func stream(w, r *net.TCPConn, total int) (time.Duration, error) {
	const chunk = 4 << 20
	src, dst := make([]byte, chunk), make([]byte, chunk)
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
	var rerr error
	for range total / chunk {
		if _, rerr = io.ReadFull(r, dst); rerr != nil {
			w.Close() // releases the writer
			break
		}
	}
	if err := <-done; rerr == nil {
		rerr = err
	}
	return time.Since(start), rerr
}

// rawLoopback measures the machine's own limits in this run, each the
// median of 5 runs: the throughput of one TCP stream on loopback (256 MiB
// in 4 MiB writes); the throughput each way of one connection carrying
// 256 MiB each way at once, as the two ranks of a ring of 2 do (each core
// then both sends one stream and receives the other, where a single
// stream has a core for each end); and the round-trip time of a 32-byte
// ping-pong (mean over 500 round trips).
func rawLoopback(b *testing.B) rawLimits {
	w, r := loopbackPair(b)
	defer w.Close()
	defer r.Close()
	const total = 256 << 20
	var single, bidir []float64
	for range 5 {
		d, err := stream(w, r, total)
		if err != nil {
			b.Fatal(err)
		}
		single = append(single, total/d.Seconds()/1e9)
	}
	for range 5 {
		var d [2]time.Duration
		errs := onAll(2, func(i int) (err error) {
			if i == 0 {
				d[i], err = stream(w, r, total)
			} else {
				d[i], err = stream(r, w, total)
			}
			return err
		})
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		bidir = append(bidir, total/max(d[0], d[1]).Seconds()/1e9)
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
	slices.Sort(single)
	slices.Sort(bidir)
	slices.Sort(rtts)
	lim := rawLimits{single: single[2], bidir: bidir[2], rtt: rtts[2], ring: map[int]float64{}}
	for _, n := range []int{2, 4, 8} {
		lim.ring[n] = rawRing(b, n)
	}
	return lim
}

// rawRing is the throughput of each link of a ring of n raw loopback
// streams running at once, 64 MiB a link, the median of 3 runs.
func rawRing(b *testing.B, n int) float64 {
	w, r := make([]*net.TCPConn, n), make([]*net.TCPConn, n)
	for i := range n {
		w[i], r[i] = loopbackPair(b)
		defer w[i].Close()
		defer r[i].Close()
	}
	const total = 64 << 20
	var rates []float64
	for range 3 {
		d := make([]time.Duration, n)
		errs := onAll(n, func(i int) (err error) {
			d[i], err = stream(w[i], r[i], total)
			return err
		})
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		rates = append(rates, total/slices.Max(d).Seconds()/1e9)
	}
	slices.Sort(rates)
	return rates[1]
}

// BenchmarkAllReduce reports bus bandwidth over TCP as nccl-tests
// computes it (algbw = bytes/time, busbw = algbw·2(n-1)/n) next to the
// raw loopback throughput measured in the same run: one stream (%raw);
// each way of two streams at once (%rawbidir); and each link of a ring
// of n raw streams running at once (%rawring: what the links of a ring of
// n can carry on this machine's cores when nothing is added or copied),
// and the time of small allreduces in loopback round trips.
func BenchmarkAllReduce(b *testing.B) { benchAllReduce(b, false) }

// BenchmarkAllReduceShm is the same through the shared segment that ranks
// on one host use by default, held against the same TCP limits.
func BenchmarkAllReduceShm(b *testing.B) {
	if !shmSupported {
		b.Skip("no shared memory on this OS")
	}
	benchAllReduce(b, true)
}

func benchAllReduce(b *testing.B, shm bool) {
	lim := rawLoopback(b)
	raw, bidir, rtt := lim.single, lim.bidir, lim.rtt
	b.Logf("raw loopback: one stream %.2f GB/s, two at once %.2f GB/s each way, round trip %v; rings of raw streams, per link: %.2f (2), %.2f (4), %.2f (8) GB/s",
		raw, bidir, rtt, lim.ring[2], lim.ring[4], lim.ring[8])
	for _, n := range []int{2, 4, 8} {
		for size := 4 << 10; size <= 64<<20; size *= 4 {
			b.Run(fmt.Sprintf("n=%d/%s", n, byteSize(size)), func(b *testing.B) {
				per := timeAllReduceOn(b, group(b, n, shm), size)
				bus := float64(size) / per / 1e9 * 2 * float64(n-1) / float64(n)
				b.ReportMetric(bus, "busGB/s")
				b.ReportMetric(raw, "rawGB/s")
				b.ReportMetric(100*bus/raw, "%raw")
				b.ReportMetric(bidir, "rawbidirGB/s")
				b.ReportMetric(100*bus/bidir, "%rawbidir")
				b.ReportMetric(lim.ring[n], "rawringGB/s")
				b.ReportMetric(100*bus/lim.ring[n], "%rawring")
				b.ReportMetric(per/rtt.Seconds(), "RTTs")
			})
		}
	}
}

// BenchmarkAllReduceProcs times allreduces between ranks that are
// processes of their own, as a tensor-parallel group's workers are, over
// shared memory and over TCP: us/op is the slowest rank's mean time of
// b.N allreduces after four to warm up.
func BenchmarkAllReduceProcs(b *testing.B) {
	for _, shm := range []bool{true, false} {
		if shm && !shmSupported {
			continue
		}
		for _, n := range []int{2, 4, 8} {
			for _, size := range []int{4 << 10, 16 << 10, 1 << 20, 16 << 20} {
				b.Run(fmt.Sprintf("%s/n=%d/%s", transport(shm), n, byteSize(size)), func(b *testing.B) {
					env := []string{fmt.Sprintf("%s=%d", countEnv, size/4), fmt.Sprintf("%s=%d", itersEnv, b.N)}
					if shm {
						env = append(env, shmEnv+"=1")
					}
					p := startRanks(b, n, env...)
					addrs := p.addrs(b)
					for _, w := range p.stdins {
						fmt.Fprintln(w, strings.Join(addrs, " "))
					}
					var per float64
					for range 2 * n { // RUNNING and TIME from each, in any order
						l := p.next(b, "the ranks' times")
						var ns float64
						if _, err := fmt.Sscanf(l.text, "TIME %g", &ns); err != nil && l.text != "RUNNING" {
							b.Fatalf("rank %d: %s", l.rank, l.text)
						}
						per = max(per, ns/1e9)
					}
					b.ReportMetric(per*1e6, "us/op")
					b.ReportMetric(float64(size)/per/1e9*2*float64(n-1)/float64(n), "busGB/s")
				})
			}
		}
	}
}

// timeAllReduce runs b.N allreduces of size bytes on a TCP group of n
// made with opts and returns the seconds one took.
func timeAllReduce(b *testing.B, n, size int, opts func(r int) Options) float64 {
	return timeAllReduceOn(b, newGroup(b, n, opts), size)
}

// timeAllReduceOn runs b.N allreduces of size bytes on comms.
func timeAllReduceOn(b *testing.B, comms []*Comm, size int) float64 {
	n := len(comms)
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
	return b.Elapsed().Seconds() / float64(b.N)
}

// BenchmarkAllReduceTLS is what mutual TLS costs a group of 2: the time
// of an allreduce over TLS against the same over plain TCP, measured in
// the same run (%plain: plain time / TLS time, 100 when TLS is free).
func BenchmarkAllReduceTLS(b *testing.B) {
	dir := newCA(b)
	names := []string{"a", "b"}
	withTLS := func(r int) Options { return tlsOptions(b, dir, names[r]) }
	for _, size := range []int{4 << 10, 256 << 10, 16 << 20} {
		var plain float64
		b.Run(fmt.Sprintf("plain/%s", byteSize(size)), func(b *testing.B) {
			plain = timeAllReduce(b, 2, size, nil)
		})
		b.Run(fmt.Sprintf("tls/%s", byteSize(size)), func(b *testing.B) {
			per := timeAllReduce(b, 2, size, withTLS)
			b.ReportMetric(per*1e6, "us/op")
			b.ReportMetric(100*plain/per, "%plain")
		})
	}
}

func byteSize(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}
