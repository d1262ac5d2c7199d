package local

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// Options start one cluster.
type Options struct {
	// Executable is the tandem binary; default: this process's own.
	Executable string
	// Args are `tandem up`'s flags (topology, model, link profile, ...);
	// Start adds --grpc-addr and --http-addr on free ports.
	Args []string
	// ReadyTimeout bounds the start; default 5 minutes.
	ReadyTimeout time.Duration
	// Log, when set, receives the cluster's output as it comes.
	Log io.Writer
	// ClientTLS is how a client reaches a cluster that serves TLS on its
	// public listeners (Args with --tls-cert): the CA its certificate
	// chains to. Such a cluster does not start without it.
	ClientTLS *tls.Config
}

// Cluster is a running `tandem up`.
type Cluster struct {
	// GRPC is the coordinator's gRPC address; HTTP its HTTP address.
	GRPC, HTTP string
	// TLS says that both are served over TLS (Options.ClientTLS reaches
	// them).
	TLS bool

	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
	out      *tail
	stopOnce sync.Once
}

// ErrExited is wrapped when the cluster's process ended before it was
// ready.
var ErrExited = errors.New("tandem up exited")

// Start runs `tandem up ARGS` and waits until its coordinator serves
// every group; on any failure (ctx ending included) the process is
// stopped before Start returns.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	exe := o.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 5 * time.Minute
	}
	args := append([]string{"up"}, o.Args...)
	args = append(args, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	cmd := exec.Command(exe, args...)
	cmd.SysProcAttr = childAttr()
	c := &Cluster{cmd: cmd, exited: make(chan struct{}), out: &tail{}}
	var logs io.Writer = c.out
	if o.Log != nil {
		logs = io.MultiWriter(c.out, o.Log)
	}
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", strings.Join(cmd.Args, " "), err)
	}
	addrs := make(chan [2]string, 1)
	go c.readStdout(stdout, logs, addrs)
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	ctx, cancel := context.WithTimeout(ctx, o.ReadyTimeout)
	defer cancel()
	if err := c.waitReady(ctx, addrs, o.ClientTLS); err != nil {
		c.Stop()
		return nil, fmt.Errorf("tandem %s: %w\n%s", strings.Join(o.Args, " "), err, c.out.String())
	}
	return c, nil
}

// readStdout copies the child's output and picks the endpoints it prints
// ("gRPC  ADDR  ..." and "HTTP  http(s)://ADDR/v1  ...").
func (c *Cluster) readStdout(r io.Reader, logs io.Writer, addrs chan<- [2]string) {
	sc := bufio.NewScanner(r)
	var grpcAddr string
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(logs, line)
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "gRPC":
			grpcAddr = f[1]
		case len(f) >= 2 && f[0] == "HTTP" && grpcAddr != "":
			addrs <- [2]string{grpcAddr, strings.TrimSuffix(f[1], "/v1")}
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// waitReady waits for the endpoints, then for Health to report every
// registered group ready.
func (c *Cluster) waitReady(ctx context.Context, addrs <-chan [2]string, clientTLS *tls.Config) error {
	select {
	case a := <-addrs:
		var plain bool
		c.GRPC = a[0]
		c.HTTP, plain = strings.CutPrefix(a[1], "http://")
		c.HTTP, c.TLS = strings.CutPrefix(c.HTTP, "https://")
		if !plain && !c.TLS {
			return fmt.Errorf("its HTTP endpoint %q is neither http:// nor https://", a[1])
		}
	case <-c.exited:
		return fmt.Errorf("%w before serving: %v", ErrExited, c.waitErr)
	case <-ctx.Done():
		return ctx.Err()
	}
	creds := insecure.NewCredentials()
	if c.TLS {
		if clientTLS == nil {
			return errors.New("it serves TLS (--tls-cert), and no CA to check its certificate against was given")
		}
		creds = credentials.NewTLS(clientTLS)
	}
	conn, err := grpc.NewClient(c.GRPC, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	health := tandemv1.NewGenerationClient(conn)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		h, err := health.Health(ctx, &tandemv1.HealthRequest{})
		if err == nil && h.GetStatus() == tandemv1.ServingStatus_SERVING_STATUS_SERVING && allReady(h) {
			return nil
		}
		select {
		case <-tick.C:
		case <-c.exited:
			return fmt.Errorf("%w before serving: %v", ErrExited, c.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("coordinator %s not serving every group: %w (last health %v, %v)", c.GRPC, ctx.Err(), h, err)
		}
	}
}

func allReady(h *tandemv1.HealthResponse) bool {
	for _, g := range h.GetGroups() {
		if g.GetReady() != g.GetTotal() {
			return false
		}
	}
	return len(h.GetGroups()) > 0
}

// Exited is closed when the cluster's process has ended.
func (c *Cluster) Exited() <-chan struct{} { return c.exited }

// Output is the last lines the cluster printed.
func (c *Cluster) Output() string { return c.out.String() }

// Stop sends SIGTERM to the cluster (which stops its workers) and waits
// for it; after 30 s it kills the whole process group. Safe to call more
// than once.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.exited
		}
	})
}

// tail keeps the last lines written to it.
type tail struct {
	mu    sync.Mutex
	lines []string
	part  string
}

const tailLines = 40

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.part + string(p)
	parts := strings.Split(s, "\n")
	t.part = parts[len(parts)-1]
	t.lines = append(t.lines, parts[:len(parts)-1]...)
	if n := len(t.lines); n > tailLines {
		t.lines = append(t.lines[:0], t.lines[n-tailLines:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(append(append([]string{}, t.lines...), t.part), "\n")
}
