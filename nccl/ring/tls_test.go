package ring

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/internal/syncbuf"
	"github.com/tandemllm/tandem/nccl"
	"github.com/tandemllm/tandem/pki/pkitest"
)

// tlsOptions are the ring options of a process holding certificate name
// of a CA made in dir.
func tlsOptions(t testing.TB, dir, name string) Options {
	t.Helper()
	server, client := pkitest.Configs(t, dir, name)
	return Options{ServerTLS: server, ClientTLS: client}
}

func newCA(t testing.TB) string { return pkitest.NewCA(t, "a", "b", "c") }

// A group over mutual TLS computes what one over TCP does.
func TestTLSGroup(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) })
	dir := newCA(t)
	names := []string{"a", "b", "c"}
	comms := newGroup(t, 3, func(r int) Options {
		o := tlsOptions(t, dir, names[r])
		o.SmallMessageBytes = 64
		return o
	})
	for _, count := range []int{4, 1000} { // recursive doubling (with a folded rank) and the ring
		checkAllReduce(t, comms, nccl.F32, count)
	}
}

// While a group forms over mutual TLS, a client without a certificate
// and a client whose certificate another CA signed are refused during the
// TLS handshake, each logged, and the group forms.
func TestTLSRefusesStrangers(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) })
	dir, other := newCA(t), newCA(t)
	lns, addrs := listeners(t, 2)
	var logs syncbuf.Buffer
	opts := []Options{tlsOptions(t, dir, "a"), tlsOptions(t, dir, "b")}
	opts[0].Logger = slog.New(slog.NewTextHandler(&logs, nil))
	strangerOpts := tlsOptions(t, other, "b")
	// Neither stranger checks the server: only rank 0 decides.
	strangers := map[string]*tls.Config{
		"no certificate": {InsecureSkipVerify: true, MinVersion: tls.VersionTLS13},
		"another CA":     {InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, GetClientCertificate: strangerOpts.ClientTLS.GetClientCertificate},
	}
	refused := make(chan string, len(strangers))
	for name, cfg := range strangers {
		c, err := net.Dial("tcp", addrs[0])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() { refused <- strangerRefused(name, tls.Client(c, cfg)) }()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	formed := make(chan []error, 1)
	go func() {
		errs, _ := connectAll(t, ctx, lns, []int{0, 1}, [][]string{addrs, addrs}, opts)
		formed <- errs
	}()
	for range strangers {
		if got := <-refused; strings.Contains(got, "not refused") {
			t.Fatal(got)
		}
	}
	noErrors(t, <-formed)
	// A stranger may see its refusal before the rank logs it.
	if text, err := logs.Await(ctx, func(s string) bool { return strings.Count(s, "TLS handshake from") >= 2 }); err != nil {
		t.Fatalf("refused handshakes not logged: %v\n%s", err, text)
	} else if n := strings.Count(text, "TLS handshake from"); n != 2 {
		t.Fatalf("%d refused handshakes logged, want 2:\n%s", n, text)
	}
}

// strangerRefused says hello as rank 1 over tc and returns name if rank
// 0 refused it, name + ": not refused" otherwise. The handshake
// completes on the client's side; the refusal comes as an alert on the
// first read. A rank's hello that got through would be answered with
// rank 0's hello instead.
func strangerRefused(name string, tc *tls.Conn) string {
	b := greeting(1)
	_, _ = tc.Write(b)
	if _, err := io.ReadFull(tc, b[:helloBytes]); err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "timeout") {
		return name
	}
	return name + ": not refused"
}

// A rank whose certificate another CA signed cannot join: its dial is
// refused at the TLS handshake and it gives up at once, saying so, while
// rank 0 waits on for a rank of its own cluster.
func TestTLSOtherClusterCannotJoin(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) })
	dir, other := newCA(t), newCA(t)
	lns, addrs := listeners(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts0 := tlsOptions(t, dir, "a")
	opts0.Logger = slog.New(slog.DiscardHandler)
	rank0 := make(chan error, 1)
	go func() {
		c, err := Connect(ctx, lns[0], 0, addrs, opts0)
		if c != nil {
			c.Close()
		}
		rank0 <- err
	}()
	start := time.Now()
	c, err := Connect(ctx, lns[1], 1, addrs, tlsOptions(t, other, "b"))
	if c != nil {
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "TLS handshake with rank 0") {
		t.Fatalf("rank 1 of another CA: %v, want a TLS handshake error", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("rank 1 took %v to give up", took)
	}
	if ctx.Err() != nil {
		t.Fatal("rank 1 waited for the deadline")
	}
	cancel()
	if err := <-rank0; err == nil || !strings.Contains(err.Error(), "no connection with rank(s) 1") {
		t.Fatalf("rank 0: %v, want the group not formed without rank 1", err)
	}
}

// A peer whose call header claims a far larger buffer than this rank's
// call (a wrong shape) is refused at the header: ErrMismatch, the
// connection closed, and nothing near the claimed size allocated.
func TestWrongShapeFrame(t *testing.T) {
	claim := uint64(1) << 40 // 4 TiB of float32
	data := ringFrames(1, header{kind: nccl.KindAllReduce, dtype: nccl.F32, alg: algDoubling, count: claim}, make([]byte, 1024))
	fp := newFakePeer(t)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := fp.exchange(t, data, 0, false)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, nccl.ErrMismatch) || !strings.Contains(err.Error(), "allreduce of 1099511627776 f32") {
		t.Fatalf("a header claiming %d elements: %v, want ErrMismatch naming it", claim, err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Fatalf("%d bytes allocated while refusing the frame", grew)
	}
}
