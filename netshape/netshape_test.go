package netshape_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemllm/tandem/internal/proctest"
	"github.com/tandemllm/tandem/netshape"
	"github.com/tandemllm/tandem/netshape/netshapetest"
)

// The test binary also plays the processes the tests need: an owner of a
// network that is then killed, the reaper it starts, and (bench_test.go)
// ring ranks inside namespaces.
const (
	ownerEnv  = "NETSHAPE_TEST_OWNER"  // "reaper" or "none": build a network, print it, wait
	reaperEnv = "NETSHAPE_TEST_REAPER" // act as the reaper: the last argument is the prefix
)

func TestMain(m *testing.M) {
	switch {
	case os.Getenv(reaperEnv) != "":
		signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		if err := netshape.Reap(context.Background(), os.Stdin, os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, "reaper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case os.Getenv(ownerEnv) != "":
		os.Exit(ownerMain(os.Getenv(ownerEnv)))
	case os.Getenv(rankEnv) != "":
		os.Exit(rankMain())
	}
	os.Exit(m.Run())
}

// ownerMain builds a two-node network (with a reaper unless how is
// "none"), starts a process inside node 0 that would outlive it, prints
// "READY prefix pid" and waits to be killed.
func ownerMain(how string) int {
	opts := netshape.Options{Nodes: 2, Profile: mustLookup("eth-25g"), ReaperStderr: os.Stderr}
	if how == "reaper" {
		// The reaper inherits this environment: reaperEnv, checked first,
		// keeps it from being an owner too.
		os.Setenv(reaperEnv, "1")
		opts.Reaper = []string{os.Args[0], "-test.run=^$"}
	}
	nw, err := netshape.New(context.Background(), opts)
	if err != nil {
		fmt.Println("FATAL", err)
		return 1
	}
	argv := nw.Command(0, "sleep", "600")
	sleeper := exec.Command(argv[0], argv[1:]...)
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // outlives this process
	if err := sleeper.Start(); err != nil {
		fmt.Println("FATAL", err)
		return 1
	}
	fmt.Println("READY", nw.Prefix(), sleeper.Process.Pid)
	select {}
}

func mustLookup(name string) netshape.Profile {
	p, err := netshape.Lookup(name)
	if err != nil {
		panic(err)
	}
	return p
}

func TestLookup(t *testing.T) {
	tests := []struct {
		name string
		rate int64
		err  error
	}{
		{"nvlink", 0, nil},
		{"ib-400g", 400e9, nil},
		{"ib-200g", 200e9, nil},
		{"eth-100g", 100e9, nil},
		{"eth-25g", 25e9, nil},
		{"eth-10g", 10e9, nil},
		{"eth-1t", 0, netshape.ErrUnknownProfile},
		{"", 0, netshape.ErrUnknownProfile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := netshape.Lookup(tt.name)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "eth-25g") {
					t.Errorf("error %q does not list the known profiles", err)
				}
				return
			}
			if p.Rate != tt.rate || p.Name != tt.name || p.Fabric == "" {
				t.Errorf("profile %+v", p)
			}
			if p.Shaped() && p.Latency <= 0 {
				t.Errorf("%s has no latency figure", p.Name)
			}
		})
	}
}

func TestOwner(t *testing.T) {
	tests := []struct {
		name, prefix string
	}{
		{"tdm42ab", "tdm42a"},
		{"tdm42ah12", "tdm42a"},
		{"tdm420zn3", "tdm420z"},
		{"tdm42", ""},
		{"tdmab", ""},
		{"eth0", ""},
		{"xtdm42ab", ""},
	}
	for _, tt := range tests {
		if p, ok := netshape.Owner(tt.name); p != tt.prefix || ok != (tt.prefix != "") {
			t.Errorf("owner(%q) = %q, %v; want %q", tt.name, p, ok, tt.prefix)
		}
	}
}

func TestTBF(t *testing.T) {
	tests := []struct {
		rate         int64
		burst, limit string
	}{
		{10e9, "262144", "4194304"},     // the floors
		{400e9, "5000000", "100000000"}, // 100 µs and 2 ms at 50 GB/s
		{25e9, "312500", "6250000"},     // 100 µs and 2 ms at 3.125 GB/s
	}
	for _, tt := range tests {
		got := strings.Join(netshape.TBF(tt.rate), " ")
		want := fmt.Sprintf("tbf rate %dbit burst %s limit %s", tt.rate, tt.burst, tt.limit)
		if got != want {
			t.Errorf("tbf(%d) = %q, want %q", tt.rate, got, want)
		}
	}
}

// ofPrefix keeps the entries of state named with prefix.
func ofPrefix(s []string, prefix string) []string {
	var out []string
	for _, e := range s {
		if strings.HasPrefix(strings.Fields(e)[1], prefix) {
			out = append(out, e)
		}
	}
	return out
}

var state = netshapetest.State

func newNetwork(t *testing.T, opts netshape.Options) *netshape.Network {
	t.Helper()
	nw, err := netshape.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nw.Close() })
	return nw
}

// TestNetwork builds three nodes, checks that each reaches the others and
// the host's address from inside its namespace, and that Close leaves
// this namespace as it found it.
func TestNetwork(t *testing.T) {
	netshapetest.Require(t)
	nw := newNetwork(t, netshape.Options{Nodes: 3, Profile: mustLookup("eth-25g")})
	nodes := nw.Nodes()
	if len(ofPrefix(state(t), nw.Prefix())) != 1+2*len(nodes) { // bridge, and per node a namespace and a veth end
		t.Fatalf("made %v", ofPrefix(state(t), nw.Prefix()))
	}
	host, err := net.Listen("tcp", net.JoinHostPort(nw.HostAddr(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	go acceptAll(host)
	for i, from := range nodes {
		var ln net.Listener
		if err := nw.Do(i, func() (err error) { ln, err = net.Listen("tcp", from.Addr+":0"); return err }); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go acceptAll(ln)
		// A listener in the namespace on the wildcard address is not
		// reachable from this namespace's loopback: it really is elsewhere.
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+portOf(ln), time.Second); err == nil {
			c.Close()
			t.Errorf("node %d's listener answers on this namespace's loopback", i)
		}
		for j, to := range nodes {
			if j == i {
				continue
			}
			if err := nw.Do(j, func() error { return dialOnce(from.Addr + ":" + portOf(ln)) }); err != nil {
				t.Errorf("node %d cannot reach node %d: %v", j, i, err)
			}
			_ = to
		}
		if err := nw.Do(i, func() error { return dialOnce(host.Addr().String()) }); err != nil {
			t.Errorf("node %d cannot reach the host address: %v", i, err)
		}
	}
	if lat := nw.PathLatency(); lat <= 0 || lat > 10*time.Millisecond {
		t.Errorf("path latency %v", lat)
	}
	desc := strings.Join(nw.Describe(), "\n")
	for _, want := range []string{"25 Gb/s each way", "one way"} {
		if !strings.Contains(desc, want) {
			t.Errorf("Describe lacks %q:\n%s", want, desc)
		}
	}
	if added, why := nw.LatencyAdded(); !added && !strings.Contains(desc, "NOT added: "+why) {
		t.Errorf("latency not added, and Describe does not say so:\n%s", desc)
	}
	t.Logf("%s", desc)
	if err := nw.Close(); err != nil {
		t.Fatal(err)
	}
	netshapetest.WaitGone(t, os.Getpid(), 0)
}

func acceptAll(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func dialOnce(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func portOf(ln net.Listener) string { return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) }

// TestFailedNewLeavesNothing fails New at several steps and checks that
// it removes what it made before it returns.
func TestFailedNewLeavesNothing(t *testing.T) {
	netshapetest.Require(t)
	tests := []struct {
		name  string
		words []string
	}{
		{"bridge address", []string{"ip addr add", "dev tdm"}},
		{"second namespace", []string{"netns add", "n1"}},
		{"second veth", []string{"type veth", "h1"}},
		{"last qdisc", []string{"tc qdisc add dev", "h2 root tbf"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := netshape.Options{Nodes: 3, Profile: mustLookup("eth-25g")}
			netshape.FailWhen(&opts, tt.words...)
			nw, err := netshape.New(t.Context(), opts)
			if err == nil {
				nw.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("error %v is not the injected one", err)
			}
			netshapetest.WaitGone(t, os.Getpid(), 0)
			if locks, _ := filepath.Glob(filepath.Join(netshape.LockDir, fmt.Sprintf("tdm%d?.lock", os.Getpid()))); len(locks) > 0 {
				t.Fatalf("lock files left: %v", locks)
			}
		})
	}
}

// startOwner runs ownerMain in a child process and returns its prefix and
// the pid of the process it started inside node 0.
func startOwner(t *testing.T, how string) (*exec.Cmd, string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), ownerEnv+"="+how)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 3 || f[0] != "READY" {
		t.Fatalf("owner said %q (%v)", line, err)
	}
	pid, _ := strconv.Atoi(f[2])
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	return cmd, f[1], pid
}

// TestReaperAfterKill kills the owner of a network with SIGKILL: its
// reaper must stop the process left inside and remove the network.
func TestReaperAfterKill(t *testing.T) {
	netshapetest.Require(t)
	owner, prefix, sleeper := startOwner(t, "reaper")
	if got := ofPrefix(state(t), prefix); len(got) != 5 {
		t.Fatalf("the owner's network: %v", got)
	}
	if err := owner.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	owner.Wait()
	netshapetest.WaitGone(t, owner.Process.Pid, 30*time.Second)
	netshapetest.WaitExited(t, 10*time.Second, sleeper) // the process inside the namespace
}

// TestSweep: a network whose owner was killed with no reaper is removed by
// the next New (or Sweep), while a live one is left alone.
func TestSweep(t *testing.T) {
	netshapetest.Require(t)
	owner, dead, sleeper := startOwner(t, "none")
	owner.Process.Kill()
	owner.Wait()
	if got := ofPrefix(state(t), dead); len(got) != 5 {
		t.Fatalf("a killed owner without a reaper should leave its network: %v", got)
	}
	live := newNetwork(t, netshape.Options{Nodes: 1, Profile: mustLookup("nvlink")})
	if got := ofPrefix(state(t), dead); len(got) != 0 {
		t.Fatalf("New did not sweep the dead network: %v", got)
	}
	if !proctest.Exited(sleeper) {
		t.Errorf("process %d inside the dead network survived the sweep", sleeper)
	}
	if err := netshape.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := ofPrefix(state(t), live.Prefix()); len(got) != 3 {
		t.Fatalf("Sweep touched a live network: %v", got)
	}
	live.Close()
	netshapetest.WaitGone(t, os.Getpid(), 0)
}

// stream sends total bytes from node `from` to node `to` over one TCP
// connection and returns the rate achieved, in bits per second.
func stream(t testing.TB, nw *netshape.Network, from, to int, total int) float64 {
	t.Helper()
	var ln net.Listener
	if err := nw.Do(to, func() (err error) { ln, err = net.Listen("tcp", nw.Node(to).Addr+":0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		n, err := io.Copy(io.Discard, c)
		if err == nil && n != int64(total) {
			err = fmt.Errorf("received %d bytes of %d", n, total)
		}
		if err == nil {
			_, err = c.Write([]byte{1}) // all arrived
		}
		got <- err
	}()
	var c net.Conn
	if err := nw.Do(from, func() (err error) { c, err = net.Dial("tcp", ln.Addr().String()); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4<<20)
	start := time.Now()
	for sent := 0; sent < total; sent += len(buf) {
		if _, err := c.Write(buf[:min(len(buf), total-sent)]); err != nil {
			t.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadFull(c, buf[:1]); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	return float64(total) * 8 / elapsed.Seconds()
}

// TestShapedRate: a stream between two nodes of a 2 Gb/s network runs at
// no more than 2 Gb/s, and not far below, while a second network of the
// same process, unshaped, carries the same stream faster: two networks of
// one process stay apart, and the limit is the shaping's doing.
func TestShapedRate(t *testing.T) {
	netshapetest.Require(t)
	const rate = 2e9
	shaped := newNetwork(t, netshape.Options{Nodes: 2, Profile: netshape.Profile{Name: "test-2g", Rate: rate}})
	free := newNetwork(t, netshape.Options{Nodes: 2, Profile: mustLookup("nvlink")})
	if shaped.Prefix() == free.Prefix() || shaped.HostAddr() == free.HostAddr() {
		t.Fatalf("two networks share a prefix or subnet: %s %s, %s %s", shaped.Prefix(), shaped.HostAddr(), free.Prefix(), free.HostAddr())
	}
	got := stream(t, shaped, 0, 1, 96<<20)
	unshaped := stream(t, free, 0, 1, 96<<20)
	t.Logf("shaped to %.1f Gb/s: %.2f Gb/s; unshaped: %.2f Gb/s", rate/1e9, got/1e9, unshaped/1e9)
	if got > 1.03*rate || got < 0.6*rate {
		t.Errorf("shaped stream ran at %.2f Gb/s; want %.1f Gb/s (at most 3%% over, at least 60%%)", got/1e9, rate/1e9)
	}
	if unshaped < 1.5*rate {
		t.Logf("the unshaped path (%.2f Gb/s) is too slow here to show the shaping's effect", unshaped/1e9)
	}
}
