package ring

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemllm/tandem/nccl"
)

// childEnv makes the test binary act as one rank of a group of separate
// processes: "rank/size".
const childEnv = "TANDEM_RING_TEST_RANK"

// childMain is a rank process: it prints its address, reads everyone's
// from stdin, forms the group and runs allreduces until one fails, then
// reports the error on stdout.
func childMain() int {
	var rank, size int
	if _, err := fmt.Sscanf(os.Getenv(childEnv), "%d/%d", &rank, &size); err != nil {
		fmt.Println("FATAL", err)
		return 1
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
	c, err := Connect(ctx, ln, rank, strings.Fields(line), Options{})
	if err != nil {
		fmt.Println("FATAL", err)
		return 1
	}
	defer c.Close()
	buf := make([]float32, 1<<20) // 4 MiB: the ring path, long enough to be hit mid-way
	for i := 0; ; i++ {
		if err := c.AllReduce(context.Background(), nccl.Float32s(buf)); err != nil {
			fmt.Printf("ERR %v %s\n", errors.Is(err, nccl.ErrPeerLost), strings.ReplaceAll(err.Error(), "\n", " "))
			return 0
		}
		if i == 3 {
			fmt.Println("RUNNING")
		}
	}
}

type line struct {
	rank int
	text string
}

// TestKilledProcess runs each rank as its own process, SIGKILLs one in
// the middle of a stream of allreduces and expects every other rank to
// fail with ErrPeerLost within 2 seconds.
func TestKilledProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	const n, victim = 4, 2
	lines := make(chan line, 64)
	cmds := make([]*exec.Cmd, n)
	stdins := make([]interface{ Write([]byte) (int, error) }, n)
	for r := range n {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d/%d", childEnv, r, n))
		cmd.Stderr = os.Stderr
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
		cmds[r], stdins[r] = cmd, stdin
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- line{r, sc.Text()}
			}
		}()
	}
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	next := func(what string) line {
		t.Helper()
		select {
		case l := <-lines:
			if strings.HasPrefix(l.text, "FATAL") {
				t.Fatalf("rank %d: %s", l.rank, l.text)
			}
			return l
		case <-timeout.C:
			t.Fatalf("timed out waiting for %s", what)
		}
		return line{}
	}
	addrs := make([]string, n)
	for range n {
		l := next("addresses")
		addrs[l.rank] = strings.TrimPrefix(l.text, "ADDR ")
	}
	for _, w := range stdins {
		fmt.Fprintln(w, strings.Join(addrs, " "))
	}
	for range n {
		if l := next("the ranks to run"); l.text != "RUNNING" {
			t.Fatalf("rank %d: %s", l.rank, l.text)
		}
	}
	if err := cmds[victim].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for range n - 1 {
		l := next("the survivors' errors")
		took := time.Since(killed)
		if !strings.HasPrefix(l.text, "ERR true ") {
			t.Errorf("rank %d: %s; want ErrPeerLost", l.rank, l.text)
		}
		if took > 2*time.Second {
			t.Errorf("rank %d noticed after %v", l.rank, took)
		}
		t.Logf("rank %d after %v: %s", l.rank, took.Round(time.Millisecond), strings.TrimPrefix(l.text, "ERR true "))
	}
	for r, cmd := range cmds {
		if r != victim {
			if err := cmd.Wait(); err != nil {
				t.Errorf("rank %d exited: %v", r, err)
			}
		}
	}
}
