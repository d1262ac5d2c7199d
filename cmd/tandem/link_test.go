package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemllm/tandem/internal/proctest"
	"github.com/tandemllm/tandem/netshape"
	"github.com/tandemllm/tandem/netshape/netshapetest"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// TestUpLinkRefused: a bad --link stops `tandem up` before it loads
// anything, with a message naming the flag: an unknown profile, a
// process that is not root, no iproute2 on PATH.
func TestUpLinkRefused(t *testing.T) {
	// The test binary, copied where any user may run it.
	dir, err := os.MkdirTemp("", "tandem-link-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tandem")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		link   string
		asUser bool   // run as nobody, when this test runs as root
		path   string // PATH, when set
		want   []string
	}{
		{name: "unknown profile", link: "eth-1t", want: []string{"--link", `"eth-1t"`, "eth-25g", "ib-400g"}},
		{name: "not root", link: "eth-25g", asUser: true, want: []string{"--link eth-25g", "needs root and iproute2", "not running as root"}},
		{name: "no iproute2", link: "eth-25g", path: dir, want: []string{"--link eth-25g", `no "ip" on PATH`, `no "tc" on PATH`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if (tt.asUser || tt.path != "") && os.Geteuid() != 0 {
				t.Skip("needs root to change user or to pass the root check")
			}
			cmd := exec.Command(bin, "up", "--link", tt.link, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
			cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CACHE_HOME="+dir) // a model made there would show
			if tt.path != "" {
				cmd.Env = append(cmd.Env, "PATH="+tt.path)
			}
			if tt.asUser {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			}
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("tandem up succeeded:\n%s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(string(out), "preparing the model") {
				t.Errorf("it got as far as the model:\n%s", out)
			}
		})
	}
}

func TestWarnLoopback(t *testing.T) {
	tests := []struct {
		otlp string
		warn bool
	}{
		{"127.0.0.1:4317", true},
		{"localhost:4317", true},
		{"[::1]:4317", true},
		{"10.213.7.1:4317", false},
		{"collector:4317", false},
		{"", false},
	}
	for _, tt := range tests {
		var buf strings.Builder
		warnLoopback(&buf, "10.213.7.1", tt.otlp)
		if got := strings.Contains(buf.String(), "10.213.7.1 (the bridge)"); got != tt.warn {
			t.Errorf("--otlp-endpoint %q: warned %v (%q), want %v", tt.otlp, got, buf.String(), tt.warn)
		}
	}
}

// TestUpLink runs `tandem up --link eth-25g`: each worker runs alone in a
// namespace, etcd listens on the bridge, a request is served, and Ctrl-C
// leaves no namespace, link or process behind.
func TestUpLink(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	netshapetest.Require(t)
	u := startUp(t, "--link", "eth-25g", "--preset", "tiny", "--mode", "unified", "--tp", "2", "--threads", "1")
	if up := strings.Join(u.stdout, "\n"); !strings.Contains(up, "etcd https://10.213.") {
		t.Errorf("etcd is not on the bridge:\n%s", up)
	}
	if !strings.Contains(u.logs.String(), "shaped to 25 Gb/s each way") {
		t.Errorf("no word of the shaping:\n%s", u.logs.String())
	}
	spaces := namespacesOf(t, os.Getpid())
	if len(spaces) != 2 {
		t.Fatalf("namespaces made: %v, want one per worker", spaces)
	}
	for _, ns := range spaces {
		if pids := namespacePids(t, ns); len(pids) != 1 {
			t.Errorf("namespace %s holds processes %v, want its one worker", ns, pids)
		}
	}
	u.generateHello(t)
	if err := u.stop(); err != nil {
		t.Fatal(err)
	}
	nothingLeft(t)
}

// nothingLeft checks that no child process of this test is left, and
// no namespace or link of a network this process built.
func nothingLeft(t *testing.T) {
	t.Helper()
	if kids := childProcesses(t); len(kids) > 0 {
		t.Fatalf("processes left behind: %v", kids)
	}
	netshapetest.WaitGone(t, os.Getpid(), 0)
}

// namespacesOf lists the namespaces of the networks process pid built.
func namespacesOf(t *testing.T, pid int) []string {
	t.Helper()
	var ns []string
	for _, e := range netshapetest.Owned(t, pid) {
		if name, ok := strings.CutPrefix(e, "netns "); ok {
			ns = append(ns, name)
		}
	}
	return ns
}

func namespacePids(t *testing.T, ns string) []int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", ns, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestUpLinkFailedStart: a start that fails after the network was built
// (the groups cannot be ready in 1 ms) removes it and its workers.
func TestUpLinkFailedStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	netshapetest.Require(t)
	cmd := newRootCmd()
	logs := &syncBuffer{} // the workers write to it too
	cmd.SetOut(io.Discard)
	cmd.SetErr(logs)
	cmd.SetArgs([]string{"up", "--link", "nvlink", "--preset", "tiny", "--mode", "unified", "--tp", "2",
		"--threads", "1", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--ready-timeout", "1ms"})
	err := cmd.ExecuteContext(t.Context())
	if err == nil {
		t.Fatal("tandem up succeeded with a 1 ms ready timeout")
	}
	if !strings.Contains(logs.String(), "link nvlink:") {
		t.Fatalf("the network was not built before the failure (%v):\n%s", err, logs.String())
	}
	nothingLeft(t)
}

// TestUpLinkInterrupted: Ctrl-C while the workers are still starting
// removes the network and the workers.
func TestUpLinkInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	netshapetest.Require(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errR, done := upInBackground(ctx, "--link", "eth-10g")
	sc := bufio.NewScanner(errR)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "groups ready: 0/") {
			cancel() // the workers are starting in their namespaces
			break
		}
	}
	go io.Copy(io.Discard, errR)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("interrupted tandem up: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tandem up did not stop within 30 s of the interrupt")
	}
	nothingLeft(t)
}

// TestUpLinkKilled kills `tandem up --link` with SIGKILL: its workers
// (parent-death signal) and its reaper (its stdin pipe ends) remove
// everything, with no new start needed.
func TestUpLinkKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	netshapetest.Require(t)
	up := exec.Command(os.Args[0], "up", "--link", "eth-25g", "--preset", "tiny", "--threads", "1", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	logs := &syncBuffer{}
	up.Stderr = logs
	out, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	defer up.Process.Kill()
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "tandem is up") {
	}
	go io.Copy(io.Discard, out)
	spaces := namespacesOf(t, up.Process.Pid)
	var pids []int
	for _, ns := range spaces {
		pids = append(pids, namespacePids(t, ns)...)
	}
	if len(spaces) != 4 || len(pids) != 4 {
		t.Fatalf("namespaces %v holding %v; want 4 workers, one in each\n%s", spaces, pids, logs.String())
	}
	reaper := processesWith(t, "link-reaper", fmt.Sprintf("tdm%da", up.Process.Pid)) // its first network's prefix
	if len(reaper) != 1 {
		t.Fatalf("reapers running: %v", reaper)
	}
	if err := up.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	up.Wait()
	netshapetest.WaitGone(t, up.Process.Pid, 30*time.Second)
	netshapetest.WaitExited(t, 15*time.Second, append(pids, reaper...)...)
}

// processesWith lists the living processes whose command line holds
// every one of args.
func processesWith(t *testing.T, args ...string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc")
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		words := strings.Split(string(cmdline), "\x00")
		has := func(a string) bool { return slices.Contains(words, a) }
		if !slices.ContainsFunc(args, func(a string) bool { return !has(a) }) && !proctest.Exited(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestUpLinkKVTransfer sends a 2048-token prompt through prefill TP-1 →
// decode TP-1 on llama-160m (48 KiB of KV per token, 96 MiB in all) over
// shaped links, and reads the transfer's bytes and time from the
// request's trace: the time is at least the bytes over the profile's
// rate. The unshaped nvlink run first is the control: it shows what the
// machine does without a limit, so the log says whether a bound could
// have been broken here. eth-10g is there because it binds on a machine
// that moves KV faster than 10 Gb/s (eth-25g may not: a 2-core VM moves
// less).
//
// Prefill chunks of 1023 tokens leave a last chunk of 2 tokens, and the
// KV of the whole prompt moves layer by layer during that chunk's step:
// its compute is short, so the recorded transfer is mostly wire time
// (with a 2048-token last chunk it would be mostly compute). The shaper
// lets a burst through at once after each idle spell (netshape's
// Profile.Burst): the bound allows one per layer.
func TestUpLinkKVTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes and prefills 2048 tokens")
	}
	netshapetest.Require(t)
	const layers = 12
	const tokens, kvBytesPerToken = 2048, layers * 8 * 64 * 2 * 4 // layers × KV heads × head dim × (K, V) × fp32
	var unshaped float64                                          // bits per second, the control's
	for _, name := range []string{"nvlink", "eth-25g", "eth-10g"} {
		t.Run(name, func(t *testing.T) {
			profile, err := netshape.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			u := startUp(t, "--link", profile.Name, "--preset", "llama-160m", "--prefill-tp", "1", "--decode-tp", "1",
				"--threads", "2", "--max-batch-tokens", "1023", "--kv-cache-mb", "256")
			conn := u.client(t)
			prompt := make([]int32, tokens)
			for i := range prompt {
				prompt[i] = int32(1 + (i*7919)%50000)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
			defer cancel()
			stream, err := tandemv1.NewGenerationClient(conn).Generate(ctx, &tandemv1.GenerateRequest{
				Prompt: &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: prompt}}, Sampling: greedyParams(2),
			})
			if err != nil {
				t.Fatal(err)
			}
			g, err := collectStream(stream)
			if err != nil || len(g.tokens) != 2 {
				t.Fatalf("%d tokens, %v", len(g.tokens), err)
			}
			resp, err := tandemv1.NewTracesClient(conn).GetTrace(ctx, &tandemv1.GetTraceRequest{RequestId: g.id})
			if err != nil {
				t.Fatal(err)
			}
			var bytes, nanos int64
			for _, r := range resp.GetTrace().GetRanks() {
				if r.GetGroup() == "prefill-0" {
					for _, kv := range r.GetKvTransfers() {
						bytes += kv.GetBytes()
						nanos += kv.GetDurationNanos()
					}
				}
			}
			if bytes != tokens*kvBytesPerToken {
				t.Fatalf("the prefill rank recorded %d KV bytes sent, want %d", bytes, tokens*kvBytesPerToken)
			}
			took := time.Duration(nanos)
			achieved := float64(bytes) * 8 / took.Seconds()
			if !profile.Shaped() {
				unshaped = achieved
				t.Logf("unshaped: %d KV bytes in %v: %.2f Gb/s", bytes, took, achieved/1e9)
				return
			}
			rate := float64(profile.Rate)
			bound := time.Duration(float64(bytes) * 8 / rate * 1e9)
			allowed := time.Duration(float64(bytes-layers*profile.Burst()) * 8 / rate * 1e9)
			t.Logf("%s: %d KV bytes in %v: %.2f Gb/s; bytes ÷ %s is %v (%v less one burst per layer); unshaped this machine did %.2f Gb/s, so the bound %s",
				profile.Name, bytes, took, achieved/1e9, profile.RateString(), bound, allowed, unshaped/1e9,
				map[bool]string{true: "binds here", false: "cannot bind here (the machine is slower than the link)"}[unshaped > rate])
			if took < allowed {
				t.Errorf("KV transfer took %v, less than its bytes over %s less one burst per layer (%v)", took, profile.Name, allowed)
			}
		})
	}
}

// TestGenerateLocalLink: `generate --local --tp 2 --link` gives the same
// tokens as without the link, says what it built and that its
// allreduces cross the link (without it they share memory), and leaves
// nothing; --link without a local group is refused.
func TestGenerateLocalLink(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	if _, _, err := runTandemStreams(t, "generate", "--local", "--preset", "tiny", "--link", "eth-25g", "Hello"); err == nil || !strings.Contains(err.Error(), "--link needs --local --tp 2") {
		t.Errorf("--link with --tp 1: %v", err)
	}
	netshapetest.Require(t)
	args := []string{"generate", "--local", "--preset", "tiny", "--json", "--tp", "2", "--threads", "1", "--max-tokens", "6", "Hello there"}
	plain, plainErr, err := runTandemStreams(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	// Ranks of one host share memory for their allreduces; ranks in
	// namespaces of their own stand for nodes and keep to the link.
	if want := "collectives: rank 0 of 2, allreduces through shared memory"; !strings.Contains(plainErr, want) {
		t.Errorf("without the link, stderr lacks %q:\n%s", want, plainErr)
	}
	linked, errOut, err := runTandemStreams(t, append(args, "--link", "eth-25g")...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "link eth-25g: 2 network namespaces") {
		t.Errorf("no word of the link:\n%q", errOut)
	}
	if want := "collectives: rank 0 of 2, allreduces over TCP"; !strings.Contains(errOut, want) {
		t.Errorf("over the link, stderr lacks %q:\n%s", want, errOut)
	}
	var a, b generateResult
	if err := errors.Join(json.Unmarshal([]byte(plain), &a), json.Unmarshal([]byte(linked), &b)); err != nil {
		t.Fatal(err)
	}
	if len(a.TokenIDs) != 6 || !slices.Equal(a.TokenIDs, b.TokenIDs) {
		t.Errorf("tokens %v over the link, %v without", b.TokenIDs, a.TokenIDs)
	}
	nothingLeft(t)
}
