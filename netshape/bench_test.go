package netshape_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/nccl"
	"github.com/tandemllm/tandem/nccl/ring"
	"github.com/tandemllm/tandem/netshape"
	"github.com/tandemllm/tandem/netshape/netshapetest"
)

// rankEnv makes the test binary one rank of a ring inside a namespace:
// "rank size bytes iterations listen-address".
const rankEnv = "NETSHAPE_TEST_RANK"

// rankMain listens, prints "ADDR address", reads every rank's address
// from stdin, forms the ring, runs one allreduce to warm up and then the
// timed ones, and prints "NS nanoseconds-per-allreduce".
func rankMain() int {
	var rank, size, bytes, iters int
	var listen string
	if _, err := fmt.Sscan(os.Getenv(rankEnv), &rank, &size, &bytes, &iters, &listen); err != nil {
		fmt.Println("FATAL", err)
		return 1
	}
	ln, err := ring.Listen(listen + ":0")
	if err != nil {
		fmt.Println("FATAL", err)
		return 1
	}
	fmt.Println("ADDR", ln.Addr())
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		fmt.Println("FATAL", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := ring.Connect(ctx, ln, rank, strings.Fields(line), ring.Options{})
	if err != nil {
		fmt.Println("FATAL", err)
		return 1
	}
	defer c.Close()
	buf := nccl.Float32s(make([]float32, bytes/4))
	if err := c.AllReduce(ctx, buf); err != nil {
		fmt.Println("FATAL", err)
		return 1
	}
	start := time.Now()
	for range iters {
		if err := c.AllReduce(ctx, buf); err != nil {
			fmt.Println("FATAL", err)
			return 1
		}
	}
	fmt.Println("NS", time.Since(start).Nanoseconds()/int64(iters))
	return 0
}

// ringOnce runs one ring of one process per node of nw and returns the
// slowest rank's time per allreduce of bytes.
func ringOnce(b *testing.B, nw *netshape.Network, bytes, iters int) time.Duration {
	n := len(nw.Nodes())
	type rank struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out *bufio.Reader
	}
	ranks := make([]rank, n)
	var addrs []string
	for i := range ranks {
		argv := nw.Command(i, os.Args[0], "-test.run=^$")
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %d %d %d %s", rankEnv, i, n, bytes, iters, nw.Node(i).Addr))
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer cmd.Wait()
		defer cmd.Process.Kill()
		ranks[i] = rank{cmd, in, bufio.NewReader(out)}
		addrs = append(addrs, field(b, ranks[i].out, "ADDR"))
	}
	for _, r := range ranks {
		fmt.Fprintln(r.in, strings.Join(addrs, " "))
	}
	var slowest time.Duration
	for _, r := range ranks {
		var ns int64
		fmt.Sscan(field(b, r.out, "NS"), &ns)
		slowest = max(slowest, time.Duration(ns))
	}
	return slowest
}

// field reads a line "key value" and returns value.
func field(b *testing.B, r *bufio.Reader, key string) string {
	line, err := r.ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 2 || f[0] != key {
		b.Fatalf("rank said %q (%v), want %s", line, err, key)
	}
	return f[1]
}

// BenchmarkRingAllReduce runs nccl/ring allreduces of 64 MiB between
// processes in namespaces linked by each profile, and reports the bus
// bandwidth as nccl-tests computes it (bytes·2(n−1)/n per time: what
// each rank's link carries each way) next to the profile's rate, the
// limit it is held against. The nvlink (unshaped) rows are the machine's
// own limit measured in the same run.
func BenchmarkRingAllReduce(b *testing.B) {
	netshapetest.Require(b)
	const size, iters = 64 << 20, 4
	for _, n := range []int{2, 4} {
		for _, p := range netshape.Profiles() {
			b.Run(fmt.Sprintf("n=%d/%s", n, p.Name), func(b *testing.B) {
				nw, err := netshape.New(b.Context(), netshape.Options{Nodes: n, Profile: p, LockDir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				defer nw.Close()
				var per []time.Duration
				for b.Loop() {
					per = append(per, ringOnce(b, nw, size, iters))
				}
				slices.Sort(per)
				med := per[len(per)/2]
				bus := float64(size) * 2 * float64(n-1) / float64(n) * 8 / med.Seconds()
				b.ReportMetric(bus/1e9, "busGb/s")
				b.ReportMetric(float64(p.Rate)/1e9, "profileGb/s")
				if p.Shaped() {
					b.ReportMetric(100*bus/float64(p.Rate), "%profile")
				}
				b.Logf("ring allreduce of 64 MiB, %d ranks over %s: %.1f ms, bus bandwidth %.2f Gb/s; profile %s", n, p.Name, float64(med)/1e6, bus/1e9, p.RateString())
			})
		}
	}
}

// BenchmarkLink streams 256 MiB over one TCP connection between two
// namespaces linked by each profile and reports the rate achieved next
// to the profile's, and the path's own one-way latency (New's probe).
func BenchmarkLink(b *testing.B) {
	netshapetest.Require(b)
	const total = 256 << 20
	for _, p := range netshape.Profiles() {
		b.Run(p.Name, func(b *testing.B) {
			nw, err := netshape.New(b.Context(), netshape.Options{Nodes: 2, Profile: p, LockDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer nw.Close()
			var rates []float64
			for b.Loop() {
				rates = append(rates, stream(b, nw, 0, 1, total))
			}
			slices.Sort(rates)
			got := rates[len(rates)/2]
			b.ReportMetric(got/1e9, "Gb/s")
			b.ReportMetric(float64(p.Rate)/1e9, "profileGb/s")
			if p.Shaped() {
				b.ReportMetric(100*got/float64(p.Rate), "%profile")
			}
			b.ReportMetric(float64(nw.PathLatency())/1e3, "path_us_one_way")
			added, why := nw.LatencyAdded()
			b.Logf("%s: one TCP stream %.2f Gb/s (profile %s); path latency %.1f µs one way; profile latency %v added: %v %s",
				p.Name, got/1e9, p.RateString(), float64(nw.PathLatency())/1e3, p.Latency, added, why)
		})
	}
}
