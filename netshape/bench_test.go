package netshape_test

import (
	"bufio"
	"cmp"
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
	if c.SharedMemory() {
		// Ranks of different namespaces stand for different nodes.
		fmt.Println("FATAL ranks in different network namespaces share memory, bypassing the shaped link")
		return 1
	}
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

// benchProfiles are the profiles the benchmarks measure, and a 2 Gb/s
// link: a rate this 2-core VM exceeds even when loaded, so that one row
// always shows the shaping binding.
func benchProfiles() []netshape.Profile {
	return append(netshape.Profiles(), netshape.Profile{Name: "check-2g", Rate: 2e9})
}

// twins builds a network of n nodes shaped to p and, for a shaped p, an
// unshaped twin, to measure in the same run what the machine does
// without the limit.
func twins(b *testing.B, n int, p netshape.Profile) (shaped, free *netshape.Network) {
	b.Helper()
	build := func(p netshape.Profile) *netshape.Network {
		nw, err := netshape.New(b.Context(), netshape.Options{Nodes: n, Profile: p})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { nw.Close() })
		return nw
	}
	shaped = build(p)
	if p.Shaped() {
		free = build(mustLookup("nvlink"))
	}
	return shaped, free
}

// report puts a shaped figure next to its limits: the profile's rate and
// what the unshaped twin did in the same run (0: none).
func report(b *testing.B, p netshape.Profile, what string, got, unshaped float64) {
	b.ReportMetric(got/1e9, what+"Gb/s")
	if !p.Shaped() {
		return
	}
	b.ReportMetric(float64(p.Rate)/1e9, "profileGb/s")
	b.ReportMetric(unshaped/1e9, "unshapedGb/s")
	// The bound is the lower of the two: a link faster than the machine
	// cannot bind.
	bound := min(float64(p.Rate), unshaped)
	b.ReportMetric(100*got/bound, "%bound")
}

func median[T cmp.Ordered](v []T) T {
	slices.Sort(v)
	return v[len(v)/2]
}

// BenchmarkRingAllReduce runs nccl/ring allreduces of 64 MiB between
// processes in namespaces linked by each profile, and reports the bus
// bandwidth as nccl-tests computes it (bytes·2(n−1)/n per time: what
// each rank's link carries each way) next to the profile's rate and the
// unshaped figure measured in the same run, interleaved: the shaped ring
// should run at the lower of the two.
func BenchmarkRingAllReduce(b *testing.B) {
	netshapetest.Require(b)
	const size, iters = 64 << 20, 4
	for _, n := range []int{2, 4} {
		bus := func(d time.Duration) float64 { return float64(size) * 2 * float64(n-1) / float64(n) * 8 / d.Seconds() }
		for _, p := range benchProfiles() {
			b.Run(fmt.Sprintf("n=%d/%s", n, p.Name), func(b *testing.B) {
				shaped, free := twins(b, n, p)
				var got, unshaped []float64
				for b.Loop() {
					got = append(got, bus(ringOnce(b, shaped, size, iters)))
					if free != nil {
						unshaped = append(unshaped, bus(ringOnce(b, free, size, iters)))
					}
				}
				g, u := median(got), 0.0
				if free != nil {
					u = median(unshaped)
				}
				report(b, p, "bus", g, u)
				b.Logf("ring allreduce of 64 MiB, %d ranks over %s (%s): bus bandwidth %.2f Gb/s; unshaped in the same run %.2f Gb/s",
					n, p.Name, p.RateString(), g/1e9, u/1e9)
			})
		}
	}
}

// BenchmarkLink streams 256 MiB over one TCP connection between two
// namespaces linked by each profile, interleaved with the same stream
// over an unshaped twin, and reports the rate achieved next to the
// profile's and the unshaped one, and the path's own one-way latency
// (New's probe).
func BenchmarkLink(b *testing.B) {
	netshapetest.Require(b)
	const total = 256 << 20
	for _, p := range benchProfiles() {
		b.Run(p.Name, func(b *testing.B) {
			shaped, free := twins(b, 2, p)
			var got, unshaped []float64
			for b.Loop() {
				got = append(got, stream(b, shaped, 0, 1, total))
				if free != nil {
					unshaped = append(unshaped, stream(b, free, 0, 1, total))
				}
			}
			g, u := median(got), 0.0
			if free != nil {
				u = median(unshaped)
			}
			report(b, p, "", g, u)
			b.ReportMetric(float64(shaped.PathLatency())/1e3, "path_us_one_way")
			added, why := shaped.LatencyAdded()
			b.Logf("%s (%s): one TCP stream %.2f Gb/s, unshaped in the same run %.2f Gb/s; path latency %.1f µs one way; profile latency %v added: %v %s",
				p.Name, p.RateString(), g/1e9, u/1e9, float64(shaped.PathLatency())/1e3, p.Latency, added, why)
		})
	}
}
