package ring

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemllm/tandem/internal/syncbuf"
	"github.com/tandemllm/tandem/nccl"
	"github.com/tandemllm/tandem/pki"
	"github.com/tandemllm/tandem/pki/pkitest"
)

// childEnv makes the test binary act as one rank of a group of separate
// processes: "rank/size". With caEnv set too ("DIR NAME"), the rank holds
// certificate NAME of the CA in DIR and the group is mutual TLS. countEnv,
// if set, is the number of f32 elements of its allreduces; with shmEnv
// set the group may share memory, else it keeps to TCP.
const (
	childEnv = "TANDEM_RING_TEST_RANK"
	caEnv    = "TANDEM_RING_TEST_CA"
	countEnv = "TANDEM_RING_TEST_COUNT"
	shmEnv   = "TANDEM_RING_TEST_SHM"
	// itersEnv, if set, makes the rank stop after that many allreduces
	// past the first four and print the mean time of one.
	itersEnv = "TANDEM_RING_TEST_ITERS"
)

// childMain is a rank process: it prints its address, reads everyone's
// from stdin, forms the group and runs allreduces until one fails, then
// reports the error on stdout. It logs to stderr.
func childMain() int {
	var rank, size int
	if _, err := fmt.Sscanf(os.Getenv(childEnv), "%d/%d", &rank, &size); err != nil {
		fmt.Println("FATAL", err)
		return 1
	}
	opts := Options{DisableSharedMemory: os.Getenv(shmEnv) == ""}
	if ca := strings.Fields(os.Getenv(caEnv)); len(ca) == 2 {
		src, err := pki.Load(pkitest.Files(ca[0], ca[1]), pki.Options{})
		if err == nil {
			opts.ServerTLS = src.ServerConfig()
			opts.ClientTLS, err = src.ClientConfig()
		}
		if err != nil {
			fmt.Println("FATAL", err)
			return 1
		}
	}
	ln, err := Listen("127.0.0.1:0")
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Connect(ctx, ln, rank, strings.Fields(line), opts)
	if err != nil {
		fmt.Println("FATAL", err)
		return 1
	}
	defer c.Close()
	if c.SharedMemory() == opts.DisableSharedMemory {
		fmt.Println("FATAL shared memory:", c.SharedMemory())
		return 1
	}
	count := 1 << 20 // 4 MiB: the ring path, long enough to be hit mid-way
	if v := os.Getenv(countEnv); v != "" {
		if _, err := fmt.Sscanf(v, "%d", &count); err != nil {
			fmt.Println("FATAL", err)
			return 1
		}
	}
	iters := 0
	if v := os.Getenv(itersEnv); v != "" {
		if _, err := fmt.Sscanf(v, "%d", &iters); err != nil {
			fmt.Println("FATAL", err)
			return 1
		}
	}
	buf := make([]float32, count)
	var start time.Time
	for i := 0; ; i++ {
		if err := c.AllReduce(context.Background(), nccl.Float32s(buf)); err != nil {
			fmt.Printf("ERR %v %s\n", errors.Is(err, nccl.ErrPeerLost), strings.ReplaceAll(err.Error(), "\n", " "))
			return 0
		}
		if i == 3 {
			fmt.Println("RUNNING")
			start = time.Now()
		}
		if iters > 0 && i == 3+iters {
			fmt.Println("TIME", time.Since(start).Nanoseconds()/int64(iters))
			return 0
		}
	}
}

type line struct {
	rank int
	text string
}

// rankProcs are the ranks of one group, each a process running
// childMain, killed when the test ends.
type rankProcs struct {
	cmds    []*exec.Cmd
	stdins  []io.Writer
	stderrs []*syncbuf.Buffer
	lines   chan line
	timeout *time.Timer
}

// startRanks starts n rank processes with env added to their
// environment; the whole exchange with them must end within 20 s.
func startRanks(t testing.TB, n int, env ...string) *rankProcs {
	t.Helper()
	p := &rankProcs{cmds: make([]*exec.Cmd, n), stdins: make([]io.Writer, n), stderrs: make([]*syncbuf.Buffer, n),
		lines: make(chan line, 64), timeout: time.NewTimer(20 * time.Second)}
	t.Cleanup(func() { p.timeout.Stop() })
	for r := range n {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(append(os.Environ(), fmt.Sprintf("%s=%d/%d", childEnv, r, n)), env...)
		p.stderrs[r] = &syncbuf.Buffer{}
		cmd.Stderr = io.MultiWriter(os.Stderr, p.stderrs[r])
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p.cmds[r], p.stdins[r] = cmd, stdin
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				p.lines <- line{r, sc.Text()}
			}
		}()
	}
	return p
}

// next is the next line a rank printed; a FATAL one fails the test.
func (p *rankProcs) next(t testing.TB, what string) line {
	t.Helper()
	select {
	case l := <-p.lines:
		if strings.HasPrefix(l.text, "FATAL") {
			t.Fatalf("rank %d: %s", l.rank, l.text)
		}
		return l
	case <-p.timeout.C:
		t.Fatalf("timed out waiting for %s", what)
	}
	return line{}
}

// addrs are the ranks' listening addresses, as they print them.
func (p *rankProcs) addrs(t testing.TB) []string {
	t.Helper()
	addrs := make([]string, len(p.cmds))
	for range p.cmds {
		l := p.next(t, "addresses")
		addrs[l.rank] = strings.TrimPrefix(l.text, "ADDR ")
	}
	return addrs
}

// form gives every rank the group's addresses and waits until each runs
// allreduces.
func (p *rankProcs) form(t testing.TB, addrs []string) {
	t.Helper()
	for _, w := range p.stdins {
		fmt.Fprintln(w, strings.Join(addrs, " "))
	}
	for range p.cmds {
		if l := p.next(t, "the ranks to run"); l.text != "RUNNING" {
			t.Fatalf("rank %d: %s", l.rank, l.text)
		}
	}
}

// TestKilledProcess runs each rank as its own process, SIGKILLs one in
// the middle of a stream of allreduces and expects every other rank to
// fail with ErrPeerLost within 2 seconds: on the ring path, on the
// recursive-doubling path, where the victim (rank 0 of 5) has a rank
// folded into it, and through shared memory, where the victim made the
// segment (rank 0) or not.
func TestKilledProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	tests := []struct {
		name             string
		n, victim, count int
		shm              bool
	}{
		{"ring", 4, 2, 1 << 20, false},
		{"doubling", 5, 0, 1000, false},
		{"shm", 4, 0, 1 << 20, true},
		{"shm small", 3, 1, 1000, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.shm && !shmSupported {
				t.Skip("no shared memory on this OS")
			}
			killRank(t, tt.n, tt.victim, tt.count, tt.shm)
		})
	}
}

func killRank(t *testing.T, n, victim, count int, shm bool) {
	env := []string{fmt.Sprintf("%s=%d", countEnv, count)}
	if shm {
		env = append(env, shmEnv+"=1")
	}
	p := startRanks(t, n, env...)
	p.form(t, p.addrs(t))
	if err := p.cmds[victim].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for range n - 1 {
		l := p.next(t, "the survivors' errors")
		took := time.Since(killed)
		if !strings.HasPrefix(l.text, "ERR true ") {
			t.Errorf("rank %d: %s; want ErrPeerLost", l.rank, l.text)
		}
		if took > 2*time.Second {
			t.Errorf("rank %d noticed after %v", l.rank, took)
		}
		t.Logf("rank %d after %v: %s", l.rank, took.Round(time.Millisecond), strings.TrimPrefix(l.text, "ERR true "))
	}
	for r, cmd := range p.cmds {
		if r != victim {
			if err := cmd.Wait(); err != nil {
				t.Errorf("rank %d exited: %v", r, err)
			}
		}
	}
}

// TestTLSProcessesRefuseStrangers: ranks that are processes of their own
// and form a group over mutual TLS refuse, at the TLS handshake, a
// connection without a certificate and one whose certificate another CA
// signed, both made to rank 0 while the group forms; each refusal is
// logged, and the group forms and runs its allreduces.
func TestTLSProcessesRefuseStrangers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir, other := newCA(t), pkitest.NewCA(t, "b")
	p := startRanks(t, 2, caEnv+"="+dir+" a") // one certificate for both ranks, as tandem certs init makes by default
	addrs := p.addrs(t)
	_, stranger := pkitest.Configs(t, other, "b")
	stranger.VerifyPeerCertificate = nil // only rank 0 decides
	refused := make(chan string, 2)
	for name, cfg := range map[string]*tls.Config{"no certificate": {InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, "another CA": stranger} {
		c, err := net.Dial("tcp", addrs[0])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		go func() { refused <- strangerRefused(name, tls.Client(c, cfg)) }()
	}
	p.form(t, addrs)
	for range 2 {
		if got := <-refused; strings.Contains(got, "not refused") {
			t.Fatal(got)
		}
	}
	if n := strings.Count(p.stderrs[0].String(), "TLS handshake from"); n != 2 {
		t.Fatalf("rank 0 logged %d refused handshakes, want 2:\n%s", n, p.stderrs[0].String())
	}
}
