package coordinator

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/cluster"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// TestCoordinator runs a coordinator against a real (embedded) etcd and
// real gRPC and HTTP servers, with no live worker: the paths that need
// none (validation, health, models, errors, membership) end to end.
func TestCoordinator(t *testing.T) {
	ctx := t.Context()
	cli := testEtcd(t)
	// Stats are polled by hand below; the hour keeps the ticker out of it.
	// A request whose group fails looks for another for a short while.
	c, err := New(ctx, Options{Etcd: cli, ModelDir: tinyDir(t), StatsInterval: time.Hour, MigrationTimeout: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	c.Register(srv)
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	gen := tandemv1.NewGenerationClient(cc)
	web := httptest.NewServer(c.HTTPHandler())
	defer web.Close()

	generate := func(req *tandemv1.GenerateRequest) error {
		stream, err := gen.Generate(ctx, req)
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); err != nil {
				return err
			}
		}
	}
	wantStatus := func(err error, code codes.Code, msg string) {
		t.Helper()
		if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
			t.Errorf("err = %v, want %v with %q", err, code, msg)
		}
	}
	post := func(path, body string) (int, string) {
		t.Helper()
		resp, err := http.Post(web.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	t.Run("models", func(t *testing.T) {
		resp, err := gen.ListModels(ctx, &tandemv1.ListModelsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if m := resp.Models; len(m) != 1 || m[0].Id != "tiny" || m[0].ContextLength != 2048 || m[0].OwnedBy != "tandem" || m[0].Created == nil {
			t.Errorf("models %v", m)
		}
		r, err := http.Get(web.URL + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var list struct {
			Object string `json:"object"`
			Data   []struct {
				ID, Object string
			} `json:"data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&list); err != nil || list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != "tiny" || list.Data[0].Object != "model" {
			t.Errorf("/v1/models: %+v %v", list, err)
		}
	})

	t.Run("no groups", func(t *testing.T) {
		h, err := gen.Health(ctx, &tandemv1.HealthRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if h.Status != tandemv1.ServingStatus_SERVING_STATUS_NOT_SERVING || len(h.Groups) != 0 || !strings.Contains(h.Message, `no ready group serves model "tiny"`) {
			t.Errorf("health %v", h)
		}
		wantStatus(generate(validRequest()), codes.Unavailable, `no ready group serves model "tiny"`)
		bad := validRequest()
		bad.Sampling.Temperature = -1
		wantStatus(generate(bad), codes.InvalidArgument, "sampling.temperature: must be >= 0, got -1")
		bad = validRequest()
		bad.Model = "other"
		wantStatus(generate(bad), codes.InvalidArgument, `model: unknown model "other"`)

		if code, body := post("/v1/completions", `{"prompt":"hi","stream":true}`); code != 503 || !strings.Contains(body, `"type":"server_error"`) {
			t.Errorf("completion: %d %s", code, body)
		}
		if code, body := post("/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"temperature":-1}`); code != 400 ||
			!strings.Contains(body, `"message":"temperature: must be >= 0, got -1"`) ||
			!strings.Contains(body, `"param":"temperature"`) {
			t.Errorf("chat: %d %s", code, body)
		}
		if code, body := post("/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`); code != 400 || !strings.Contains(body, `"param":"model"`) {
			t.Errorf("chat with unknown model: %d %s", code, body)
		}
		if code, body := post("/v1/nothing", `{}`); code != 404 || !strings.Contains(body, "unknown route POST /v1/nothing") {
			t.Errorf("unknown route: %d %s", code, body)
		}
		r, err := http.Get(web.URL + "/v1/completions")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 405 {
			t.Errorf("GET /v1/completions: %d", r.StatusCode)
		}
		for path, want := range map[string]int{"/readyz": 503, "/healthz": 200, "/livez": 200} {
			r, err = http.Get(web.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != want {
				t.Errorf("%s with no group: %d, want %d", path, r.StatusCode, want)
			}
		}
	})

	t.Run("request id header", func(t *testing.T) {
		send := func(id string) (*http.Response, string) {
			t.Helper()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, web.URL+"/v1/completions", strings.NewReader(`{"prompt":"hi","stream":true}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Request-Id", id)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp, string(b)
		}
		// No group serves it, and the error still carries the client's id.
		if resp, body := send("client-7"); resp.StatusCode != 503 || resp.Header.Get("X-Request-Id") != "client-7" {
			t.Errorf("no group: %d, X-Request-Id %q: %s", resp.StatusCode, resp.Header.Get("X-Request-Id"), body)
		}
		// An id in flight is refused, naming the header.
		release, err := c.admit("client-8")
		if err != nil {
			t.Fatal(err)
		}
		resp, body := send("client-8")
		release()
		if resp.StatusCode != 409 || !strings.Contains(body, `"param":"X-Request-Id"`) || !strings.Contains(body, `X-Request-Id: a request with id \"client-8\" is in flight`) {
			t.Errorf("an id in flight: %d %s", resp.StatusCode, body)
		}
		// An id too long is refused before anything else, and not echoed.
		resp, body = send(strings.Repeat("x", 300))
		if resp.StatusCode != 400 || !strings.Contains(body, `"param":"X-Request-Id"`) || resp.Header.Get("X-Request-Id") != "" {
			t.Errorf("an id of 300 bytes: %d, X-Request-Id %q: %s", resp.StatusCode, resp.Header.Get("X-Request-Id"), body)
		}
	})

	t.Run("dead group", func(t *testing.T) {
		// A group whose leader registered and died before its lease
		// expired: ready in etcd, refusing connections.
		dead, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := dead.Addr().String()
		dead.Close()
		reg, err := cluster.Register(ctx, cli, cluster.Registration{Role: cluster.RoleUnified, Group: "u", TP: 1, Addr: addr, Model: "tiny", KVBlocks: 64, KVBlockSize: 16}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.members.WaitReady(ctx, "u"); err != nil {
			t.Fatal(err)
		}
		c.sync(ctx, c.members.Groups())
		h := c.health()
		if h.Status != tandemv1.ServingStatus_SERVING_STATUS_SERVING || len(h.Groups) != 1 || h.Groups[0].Role != tandemv1.Role_ROLE_UNIFIED || h.Groups[0].Ready != 1 || h.Groups[0].Total != 1 {
			t.Errorf("health with the group %v", h)
		}
		// Routed before any poll: the worker call fails, naming the group,
		// and no other group takes the request within the migration
		// timeout.
		wantStatus(generate(validRequest()), codes.Unavailable, `group "u" is unavailable`)
		// A group that failed a request is not routed to until its Stats
		// answer, and here they fail.
		c.mu.Lock()
		g := c.groups["u"]
		c.mu.Unlock()
		for range 2 {
			if h := c.health(); h.Status != tandemv1.ServingStatus_SERVING_STATUS_NOT_SERVING || h.Groups[0].Ready != 0 || h.Groups[0].Total != 1 {
				t.Errorf("health after the group failed %v", h)
			}
			c.pollGroup(g)
		}
		wantStatus(generate(validRequest()), codes.Unavailable, `no ready group serves model "tiny"`)
		if code, body := post("/v1/completions", `{"prompt":"hi","stream":true}`); code != 503 || !strings.Contains(body, `no ready group serves model`) {
			t.Errorf("completion on a dead group: %d %s", code, body)
		}

		// Leaving the cluster cancels the group and closes its connection.
		if err := reg.Close(ctx); err != nil {
			t.Fatal(err)
		}
		for {
			changed := c.members.Changed()
			if _, ok := c.members.Group("u"); !ok {
				break
			}
			select {
			case <-changed:
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
		c.sync(ctx, c.members.Groups())
		if g.ctx.Err() == nil || len(c.health().Groups) != 0 {
			t.Errorf("group still there: %v", c.health())
		}
		c.mu.Lock()
		conns := len(c.conns)
		c.mu.Unlock()
		if conns != 0 {
			t.Errorf("%d connections left", conns)
		}
	})
}

func TestNewRequiresOptions(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, Options{ModelDir: "x"}); err == nil || !strings.Contains(err.Error(), "Etcd") {
		t.Errorf("no etcd: %v", err)
	}
	if _, err := New(ctx, Options{Etcd: &clientv3.Client{}}); err == nil || !strings.Contains(err.Error(), "ModelDir") {
		t.Errorf("no model dir: %v", err)
	}
	if _, err := New(ctx, Options{Etcd: &clientv3.Client{}, ModelDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("empty model dir: %v", err)
	}
}
