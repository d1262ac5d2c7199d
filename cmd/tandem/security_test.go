package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tandemllm/tandem/apikey"
	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/internal/proctest"
	"github.com/tandemllm/tandem/kvtransfer"
	"github.com/tandemllm/tandem/parallel"
	"github.com/tandemllm/tandem/pki"
	"github.com/tandemllm/tandem/pki/pkitest"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/telemetry/otlptest"
)

// upProcess is `tandem up` running as a process of its own, as a user
// runs it; its workers are this test binary too (see TestMain).
type upProcess struct {
	p    *process
	out  *syncBuffer
	grpc string // the gRPC endpoint
	http string // the HTTP API's root, such as https://127.0.0.1:8080
	etcd string // the etcd endpoints, comma-separated
}

// startUpProcess runs `tandem up ARGS` (tiny preset, free ports) and
// waits until the cluster is up. The test's end interrupts it as Ctrl-C
// would and waits for it to exit.
func startUpProcess(t *testing.T, args ...string) *upProcess {
	t.Helper()
	u := &upProcess{out: &syncBuffer{}}
	ready := &lineWatch{w: u.out, field: "Ctrl-C", found: make(chan string, 1)}
	u.p = startProcess(t, append([]string{"up", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--preset", "tiny", "--threads", "1", "--kv-cache-mb", "16"}, args...), ready)
	t.Cleanup(func() { // before startProcess's kill: a clean stop removes the run's files
		_ = u.p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-u.p.done:
		case <-time.After(30 * time.Second):
			t.Errorf("tandem up did not stop within 30 s of the interrupt")
		}
		if t.Failed() {
			t.Logf("tandem up's output:\n%s", u.out.String())
		}
	})
	select {
	case <-ready.found:
	case <-u.p.done:
		t.Fatalf("tandem up exited: %v\n%s", u.p.err, u.out.String())
	case <-time.After(3 * time.Minute):
		t.Fatalf("tandem up was not up after 3 minutes\n%s", u.out.String())
	}
	for _, line := range strings.Split(u.out.String(), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "gRPC":
			u.grpc = f[1]
		case len(f) >= 2 && f[0] == "HTTP":
			u.http = strings.TrimSuffix(f[1], "/v1")
		case strings.HasPrefix(line, "tandem is up:"):
			u.etcd = f[len(f)-1]
		}
	}
	return u
}

// pid is tandem up's process id.
func (u *upProcess) pid() int { return u.p.cmd.Process.Pid }

// dial connects to the coordinator's gRPC API as a client with these
// flags would.
func (u *upProcess) dial(t *testing.T, c clientFlags) *grpc.ClientConn {
	t.Helper()
	c.addr = u.grpc
	conn, err := c.dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// post sends body to the HTTP API's path with key as bearer token ("":
// none) and returns the status and body.
func post(t *testing.T, hc *http.Client, url, key string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// openAIError decodes an OpenAI error body.
func openAIError(t *testing.T, b []byte) (code, typ, param, msg string) {
	t.Helper()
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not an OpenAI error body: %q: %v", b, err)
	}
	if e.Error.Code != nil {
		code = *e.Error.Code
	}
	if e.Error.Param != nil {
		param = *e.Error.Param
	}
	return code, e.Error.Type, param, e.Error.Message
}

// grpcGenerate runs one short request over conn with key as its API key
// ("": none).
func grpcGenerate(t *testing.T, conn *grpc.ClientConn, key string, n int) (generated, error) {
	t.Helper()
	var opts []grpc.CallOption
	if key != "" {
		opts = append(opts, grpc.PerRPCCredentials(apikey.PerRPC(key)))
	}
	stream, err := tandemv1.NewGenerationClient(conn).Generate(t.Context(), &tandemv1.GenerateRequest{
		Prompt: &tandemv1.GenerateRequest_Text{Text: "Hello"}, Sampling: greedyParams(n)}, opts...)
	if err != nil {
		return generated{}, err
	}
	return collectStream(stream)
}

// TestPublicAPISecurity runs `tandem up` with API keys (one given as a
// flag, one in a keys file), plain and with TLS on the public listeners,
// and checks as clients see it: no key or a wrong key gets 401 with an
// OpenAI error (UNAUTHENTICATED over gRPC) before anything is generated;
// the right keys get 200 and tokens; the probes, /metrics and gRPC health
// stay open; a keys file edited and SIGHUP'd takes effect without a
// restart; with TLS the clients check the certificate, and `tandem
// generate --ca-cert` with TANDEM_API_KEY gets tokens; no key ever shows
// in the process's output, in /metrics or in a span it exports.
func TestPublicAPISecurity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tandem up")
	}
	certs := t.TempDir()
	ca, err := pki.Init(certs, []string{"server"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(certs, pki.CACertFile)
	const flagKey, fileKey1, fileKey2, wrongKey = "flag-key-5b0f3c", "file-key-one-7d21", "file-key-two-93ae", "wrong-key-c4d2"
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) {
			keysFile := filepath.Join(t.TempDir(), "keys")
			if err := os.WriteFile(keysFile, []byte("# the team's keys\n"+fileKey1+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			rcv := otlptest.Start(t)
			args := []string{"--mode", "unified", "--tp", "1", "--api-key", flagKey, "--api-keys-file", keysFile, "--otlp-endpoint", rcv.Addr()}
			client := clientFlags{}
			hc := &http.Client{Timeout: time.Minute}
			if withTLS {
				args = append(args, "--tls-cert", filepath.Join(certs, "server.crt"), "--tls-key", filepath.Join(certs, "server.key"))
				client.caCert = caFile
				cfg, err := pki.ClientRoots(caFile, "")
				if err != nil {
					t.Fatal(err)
				}
				hc.Transport = &http.Transport{TLSClientConfig: cfg}
			}
			u := startUpProcess(t, args...)
			if withTLS != strings.HasPrefix(u.http, "https://") {
				t.Fatalf("HTTP endpoint %s with TLS %v", u.http, withTLS)
			}
			completions := u.http + "/v1/completions"
			body := func() io.Reader {
				return strings.NewReader(`{"prompt": "Hello", "max_tokens": 4, "ignore_eos": true}`)
			}

			if withTLS {
				// A client that does not know the CA refuses the server.
				_, err := (&http.Client{Timeout: time.Minute}).Get(u.http + "/healthz")
				if err == nil || !strings.Contains(err.Error(), "certificate") {
					t.Fatalf("a client without the CA: %v, want a certificate error", err)
				}
				conn := u.dial(t, clientFlags{tls: true}) // the system's roots
				if _, err := grpcGenerate(t, conn, flagKey, 1); err == nil || !strings.Contains(err.Error(), "certificate") {
					t.Fatalf("a gRPC client without the CA: %v, want a certificate error", err)
				}
			}

			for _, tc := range []struct {
				name, key string
				want      int
			}{{"no key", "", 401}, {"wrong key", wrongKey, 401}, {"a prefix of the flag's key", flagKey[:5], 401},
				{"the flag's key", flagKey, 200}, {"the file's key", fileKey1, 200}} {
				code, b := post(t, hc, completions, tc.key, body())
				if code != tc.want {
					t.Fatalf("%s: HTTP %d %s, want %d", tc.name, code, b, tc.want)
				}
				if code == 401 {
					if ecode, typ, _, _ := openAIError(t, b); ecode != "invalid_api_key" || typ != "invalid_request_error" {
						t.Fatalf("%s: error %s", tc.name, b)
					}
					continue
				}
				var resp struct {
					Choices []struct{ Text string } `json:"choices"`
				}
				if err := json.Unmarshal(b, &resp); err != nil || len(resp.Choices) != 1 || resp.Choices[0].Text == "" {
					t.Fatalf("%s: %s (%v), want generated text", tc.name, b, err)
				}
			}
			for _, path := range []string{"/healthz", "/livez", "/readyz", "/metrics"} {
				resp, err := hc.Get(u.http + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("%s without a key: %d, want 200 (open without --protect-metrics)", path, resp.StatusCode)
				}
			}
			if resp, err := hc.Get(u.http + "/v1/models"); err != nil || resp.StatusCode != 401 {
				t.Fatalf("/v1/models without a key: %v %v, want 401", resp, err)
			}

			conn := u.dial(t, client)
			for _, tc := range []struct {
				name, key string
				want      codes.Code
			}{{"no key", "", codes.Unauthenticated}, {"wrong key", wrongKey, codes.Unauthenticated}, {"the flag's key", flagKey, codes.OK}} {
				g, err := grpcGenerate(t, conn, tc.key, 4)
				if status.Code(err) != tc.want || tc.want == codes.OK && len(g.tokens) != 4 {
					t.Fatalf("gRPC, %s: %d tokens, %v; want %v", tc.name, len(g.tokens), err, tc.want)
				}
			}
			if h, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("gRPC health without a key: %v, %v; want SERVING", h.GetStatus(), err)
			}

			// The keys file edited, then SIGHUP: the new key works, the
			// removed one no longer does, the flag's stays.
			if err := os.WriteFile(keysFile, []byte(fileKey2+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(u.pid(), syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			u.out.waitFor(t, "API keys reloaded", 30*time.Second)
			if code, b := post(t, hc, completions, fileKey2, body()); code != 200 {
				t.Fatalf("the key added to the file, after SIGHUP: %d %s", code, b)
			}
			if code, b := post(t, hc, completions, fileKey1, body()); code != 401 {
				t.Fatalf("a key removed from the file: %d %s, want 401", code, b)
			}
			if code, b := post(t, hc, completions, flagKey, body()); code != 200 {
				t.Fatalf("the flag's key after the reload: %d %s", code, b)
			}

			// The CLI, with the key from the environment.
			t.Setenv("TANDEM_API_KEY", fileKey2)
			genArgs := []string{"generate", "--addr", u.grpc, "--max-tokens", "3", "--json", "Hello"}
			if withTLS {
				genArgs = append(genArgs, "--ca-cert", caFile)
			}
			out, err := runTandem(t, genArgs...)
			if err != nil || !strings.Contains(out, `"request_id"`) {
				t.Fatalf("tandem generate: %v\n%s", err, out)
			}
			t.Setenv("TANDEM_API_KEY", "")
			if _, err := runTandem(t, genArgs...); err == nil || !strings.Contains(err.Error(), "API key") {
				t.Fatalf("tandem generate without a key: %v, want the refusal", err)
			}

			resp, err := hc.Get(u.http + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			scrape, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(scrape), `tandem:unauthenticated_requests_total{api="http",model_name="tiny"}`) {
				t.Fatalf("/metrics has no count of refused requests")
			}
			// The spans of the requests served and refused (refused ones
			// get a server span of their call), every attribute and event.
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			spans, err := rcv.WaitFor(ctx, func(all []otlptest.Span) bool { return len(otlptest.ByName(all, "tandem.request")) >= 5 })
			if err != nil {
				t.Fatalf("the requests' spans: %v", err)
			}
			var traces []byte
			for _, sp := range spans {
				b, err := proto.Marshal(sp.Span)
				if err != nil {
					t.Fatal(err)
				}
				traces = append(traces, b...)
			}
			for _, key := range []string{flagKey, fileKey1, fileKey2, wrongKey} {
				if strings.Contains(string(scrape), key) {
					t.Fatalf("/metrics shows the key %q", key)
				}
				if strings.Contains(string(traces), key) {
					t.Fatalf("a span holds the key %q", key)
				}
				// The flag's key is in tandem up's argument list, which
				// its output never repeats.
				if strings.Contains(u.out.String(), key) {
					t.Fatalf("tandem up's output shows the key %q", key)
				}
			}
			if withTLS {
				checkCertRenewal(t, ca, certs, u)
			}
		})
	}
}

// checkCertRenewal renews the public listeners' certificate in dir as a
// cert-manager Secret is renewed (new files renamed over the old) and
// waits until both listeners present it to new connections, without a
// restart.
func checkCertRenewal(t *testing.T, ca *pki.CA, dir string, u *upProcess) {
	t.Helper()
	roots, err := pki.ClientRoots(filepath.Join(dir, pki.CACertFile), "")
	if err != nil {
		t.Fatal(err)
	}
	roots.NextProtos = []string{"h2"} // what gRPC needs; the HTTP listener speaks it too
	served := func(addr string) *big.Int {
		c, err := tls.Dial("tcp", addr, roots)
		if err != nil {
			t.Fatalf("TLS to %s: %v", addr, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	httpAddr := strings.TrimPrefix(u.http, "https://")
	old := served(httpAddr)
	cert, key, err := ca.Issue("server", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"server.key": key, "server.crt": cert} {
		tmp := filepath.Join(dir, name+".new")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// The listeners look at the files at most once a second, at a
	// handshake: only new handshakes can tell.
	waitFor(t, 30*time.Second, "the renewed certificate on the HTTP listener", func() bool { return served(httpAddr).Cmp(old) != 0 })
	waitFor(t, 30*time.Second, "the renewed certificate on the gRPC listener", func() bool { return served(u.grpc).Cmp(old) != 0 })
}

// identityOf is the client configuration of certificate name of the CA in
// dir, as a process of that cluster holds it.
func identityOf(t *testing.T, dir, name string) *tls.Config {
	t.Helper()
	_, client := pkitest.Configs(t, dir, name)
	return client
}

// securedUp is `tandem up` given the certificates of a CA the test made
// (every process holds its "node" certificate), and what the test, holding
// its "test" certificate, reads as a member: etcd and the groups.
type securedUp struct {
	*upProcess
	ca     string
	member *tls.Config
	cli    *clientv3.Client
	groups []cluster.Group
}

func startSecuredUp(t *testing.T, args ...string) *securedUp {
	t.Helper()
	ca := pkitest.NewCA(t, "node", "test")
	f := pkitest.Files(ca, "node")
	u := startUpProcess(t, append([]string{"--internal-ca", f.CA, "--internal-cert", f.Cert, "--internal-key", f.Key}, args...)...)
	su := &securedUp{upProcess: u, ca: ca, member: identityOf(t, ca, "test")}
	cli, err := dialEtcd(u.etcd, "", &internalTLS{client: su.member})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	su.cli, su.groups = cli, groupsIn(t, cli)
	return su
}

// groupsIn are the groups registered in etcd now.
func groupsIn(t *testing.T, cli *clientv3.Client) []cluster.Group {
	t.Helper()
	members, err := cluster.WatchMembership(t.Context(), cli)
	if err != nil {
		t.Fatal(err)
	}
	defer members.Close()
	return members.Groups()
}

// TestInternalMutualTLS runs `tandem up` (prefill TP-2, decode TP-2) with
// the cluster's certificates given, and attacks it from outside: etcd, an
// internal gRPC call to every rank and a KV push to every decode rank,
// each without a certificate and with one another CA signed, are refused
// (logged by the ranks), and a worker process holding another CA's
// certificate cannot register; the cluster serves throughout. (The ring's
// listeners close once a group has formed; a ring peer without the
// cluster's certificate is refused at its handshake while a group forms:
// nccl/ring's TLS tests.)
func TestInternalMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tandem up")
	}
	su := startSecuredUp(t)
	u, cli, groups := su.upProcess, su.cli, su.groups
	other := pkitest.NewCA(t, "node", "test")
	if !strings.HasPrefix(u.etcd, "https://") {
		t.Fatalf("etcd at %s, want https", u.etcd)
	}
	var ranks, decodeRanks []string
	for _, g := range groups {
		for _, r := range g.Ranks {
			ranks = append(ranks, r.Addr)
			if g.Role == cluster.RoleDecode {
				decodeRanks = append(decodeRanks, r.Addr)
			}
		}
	}
	if len(ranks) != 4 || len(decodeRanks) != 2 {
		t.Fatalf("ranks %v (decode %v), want 4 (2)", ranks, decodeRanks)
	}
	serves := func() {
		t.Helper()
		g, err := grpcGenerate(t, u.dial(t, clientFlags{}), "", 6)
		if err != nil || len(g.tokens) != 6 {
			t.Fatalf("the cluster does not serve: %d tokens, %v", len(g.tokens), err)
		}
	}
	serves()

	stranger := identityOf(t, other, "test")
	stranger.VerifyPeerCertificate = nil // it would refuse the cluster first: only the cluster decides here
	for _, tc := range []struct {
		name string
		cfg  *tls.Config // nil: plain TCP
	}{{"plain TCP", nil}, {"no certificate", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}, {"another CA", stranger}} {
		t.Run(tc.name, func(t *testing.T) {
			ecli, err := dialEtcd(u.etcd, "", &internalTLS{client: tc.cfg})
			if err == nil {
				ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
				_, err = ecli.Get(ctx, "/tandem/", clientv3.WithPrefix())
				cancel()
				ecli.Close()
			}
			if err == nil {
				t.Fatal("etcd answered")
			}
			creds := insecure.NewCredentials()
			if tc.cfg != nil {
				creds = credentials.NewTLS(tc.cfg)
			}
			for _, addr := range ranks {
				conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				_, err = tandemv1.NewRankClient(conn).Clock(ctx, &tandemv1.ClockRequest{})
				cancel()
				conn.Close()
				if err == nil {
					t.Fatalf("Rank.Clock at %s answered", addr)
				}
			}
			s := kvtransfer.NewSender(kvtransfer.SenderOptions{MaxAttempts: 1, TLS: tc.cfg})
			defer s.Close()
			for i, addr := range decodeRanks {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				_, err := s.Push(ctx, zeroKV{}, kvtransfer.SendSpec{RequestID: "intruder", Attempt: 1, DestRank: i, DestAddr: addr,
					Layers: 2, Tokens: 4, Heads: parallel.Range{From: 0, To: 4}, HeadDim: 32})
				cancel()
				if err == nil {
					t.Fatalf("a KV push to %s succeeded", addr)
				}
			}
			serves()
		})
	}
	if n := strings.Count(u.out.String(), "refused a connection at its TLS handshake"); n < 2*len(decodeRanks) {
		t.Fatalf("the decode ranks logged %d refused connections, want at least %d", n, 2*len(decodeRanks))
	}

	// A worker of another cluster: refused by etcd, it never registers.
	out := &syncBuffer{}
	intruder := startProcess(t, []string{"worker", "--role", "unified", "--group", "intruder", "--tp", "1", "--etcd-endpoints", u.etcd,
		"--preset", "tiny", "--threads", "1", "--kv-cache-mb", "16", "--internal-ca", filepath.Join(other, pki.CACertFile),
		"--internal-cert", filepath.Join(other, "node.crt"), "--internal-key", filepath.Join(other, "node.key")}, out)
	select {
	case <-intruder.done:
		if intruder.err == nil || !strings.Contains(out.String(), "etcd refused the TLS handshake") {
			t.Fatalf("a worker of another CA: %v, want it to say etcd refused it:\n%s", intruder.err, out)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("a worker of another CA still runs after 2 minutes:\n%s", out)
	}
	resp, err := cli.Get(t.Context(), "/tandem/members/intruder/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("the intruder's registrations: %v, %v; want none", resp, err)
	}
	serves()
}

// zeroKV is a kvtransfer.Source of zeros.
type zeroKV struct{}

func (zeroKV) ReadLayer(int, parallel.Range, []byte) error { return nil }

// TestUpRunsMutualTLSByDefault: `tandem up` with no security flags serves
// its etcd over https, refuses a client without the cluster's
// certificate, listens on loopback alone (every process of it), and
// removes its throwaway CA when it stops.
func TestUpRunsMutualTLSByDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tandem up")
	}
	u := startUpProcess(t, "--mode", "unified", "--tp", "1")
	if !strings.HasPrefix(u.etcd, "https://") {
		t.Fatalf("etcd at %s, want https", u.etcd)
	}
	for _, cfg := range []*tls.Config{nil, {InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}} {
		cli, err := dialEtcd(u.etcd, "", &internalTLS{client: cfg})
		if err == nil {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			_, err = cli.Get(ctx, "/tandem/", clientv3.WithPrefix())
			cancel()
			cli.Close()
		}
		if err == nil {
			t.Fatalf("etcd answered a client without a certificate (TLS %v)", cfg != nil)
		}
	}
	if g, err := grpcGenerate(t, u.dial(t, clientFlags{}), "", 3); err != nil || len(g.tokens) != 3 {
		t.Fatalf("%d tokens, %v", len(g.tokens), err)
	}
	// Every listener of the whole cluster (up: etcd and the coordinator;
	// the workers: gRPC, metrics) is on loopback.
	pids := append([]int{u.pid()}, proctest.Children(t, u.pid())...)
	listening := listeners(t, pids)
	if len(listening) < 6 {
		t.Fatalf("%d listening sockets found (%v); want etcd's two, the coordinator's two and each worker's", len(listening), listening)
	}
	t.Logf("tandem up and its workers listen on %v", listening)
	for _, addr := range listening {
		if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
			t.Errorf("a listener on %s, not loopback (all: %v)", addr, listening)
		}
	}
	// The throwaway CA's directory, read off a worker's command line (other
	// runs of tandem up on this machine make their own next to it).
	pkiDir := ""
	for _, pid := range pids[1:] {
		if ca := flagOf(t, pid, "--internal-ca"); ca != "" {
			pkiDir = filepath.Dir(ca)
			break
		}
	}
	if pkiDir == "" {
		t.Fatalf("no worker of tandem up was given --internal-ca")
	}
	if _, err := os.Stat(pkiDir); err != nil {
		t.Fatalf("the running cluster's CA directory: %v", err)
	}
	_ = u.p.cmd.Process.Signal(os.Interrupt)
	<-u.p.done
	if _, err := os.Stat(pkiDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the throwaway CA's directory %s is left behind (stat: %v)", pkiDir, err)
	}
}

// flagOf is the value given to flag on process pid's command line, or "".
func flagOf(t *testing.T, pid int, flag string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("command line of %d: %v", pid, err)
	}
	args := strings.Split(string(b), "\x00")
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// listeners are the local addresses of the TCP sockets the processes
// pids listen on, from /proc.
func listeners(t *testing.T, pids []int) []string {
	t.Helper()
	inodes := map[string]bool{}
	for _, pid := range pids {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Skipf("no /proc: %v", err)
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if ino, ok := strings.CutPrefix(link, "socket:["); ok && err == nil {
				inodes[strings.TrimSuffix(ino, "]")] = true
			}
		}
	}
	var out []string
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pids[0], table))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: LISTEN
				continue
			}
			out = append(out, procAddr(t, f[1]))
		}
	}
	return out
}

// procAddr decodes /proc/net/tcp's HEXIP:HEXPORT (IPv4 or IPv6, each
// 32-bit word in host order).
func procAddr(t *testing.T, s string) string {
	t.Helper()
	hexIP, hexPort, _ := strings.Cut(s, ":")
	raw, err := hex.DecodeString(hexIP)
	port, perr := strconv.ParseUint(hexPort, 16, 16)
	if err != nil || perr != nil || len(raw)%4 != 0 {
		t.Fatalf("/proc/net/tcp address %q", s)
	}
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 { // little-endian words
		ip[i], ip[i+1], ip[i+2], ip[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
}
