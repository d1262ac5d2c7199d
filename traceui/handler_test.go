package traceui

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// weirdID needs escaping everywhere: in a path, in HTML, in a header.
const weirdID = `weird <id> & "x"/y`

func fixtureTraces() []*tandemv1.RequestTrace {
	return []*tandemv1.RequestTrace{
		fixtureTrace("req-1", fixtureArrival, 8),
		fixtureTrace("req-2", fixtureArrival+1_000_000_000, 5),
		fixtureTrace(weirdID, fixtureArrival+2_000_000_000, 3),
	}
}

func fakePerfetto(w io.Writer, t *tandemv1.RequestTrace) error {
	_, err := fmt.Fprintf(w, `{"traceEvents":[],"tokens":%d}`, len(t.GetTokens()))
	return err
}

func TestHandler(t *testing.T) {
	traces := fixtureTraces()
	full := Options{Source: &fixtureSource{traces: traces}, Perfetto: fakePerfetto}
	noPerfetto := Options{Source: &fixtureSource{traces: traces}}
	failing := Options{Source: &fixtureSource{err: errors.New("etcd exploded")}, Perfetto: fakePerfetto}
	empty := Options{Source: &fixtureSource{}, Title: "Cluster <b>"}
	badPerfetto := Options{Source: &fixtureSource{traces: traces}, Perfetto: func(io.Writer, *tandemv1.RequestTrace) error {
		return errors.New("no room for events")
	}}

	tests := []struct {
		name     string
		opts     Options
		method   string
		path     string
		code     int
		ctype    string            // Content-Type prefix
		header   map[string]string // exact header values
		want     []string          // substrings of the body
		wantNot  []string
		count    map[string]int // substring -> occurrences in the body
		inOrder  []string       // substrings that appear in this order
		noBody   bool
		skipHTML bool
	}{
		{
			name: "list", opts: full, path: "/ui/", code: 200, ctype: "text/html",
			want: []string{
				`<a href="/ui/requests/req-1">req-1</a>`, "2023-11-14 22:13:20.000 UTC", "2023-11-14 22:13:21.000 UTC",
				"prefill-0 → decode-0", ">length<", ">4.60<", // TTFT
				">3.17<", // TPOT of req-1: (26.8-4.6)/7 ms
				`<link rel="stylesheet" href="/ui/static/style.css">`,
			},
			count:   map[string]int{`<tr class="request">`: 3},
			inOrder: []string{"weird", "req-2", "req-1"},
		},
		{
			name: "list limit", opts: full, path: "/ui/?limit=2", code: 200, ctype: "text/html",
			want: []string{"req-2", "at most 2"}, wantNot: []string{"req-1"},
			count: map[string]int{`<tr class="request">`: 2},
		},
		{name: "list bad limit", opts: full, path: "/ui/?limit=lots", code: 400, ctype: "text/html", want: []string{"limit must be a positive integer"}},
		{name: "list zero limit", opts: full, path: "/ui/?limit=0", code: 400, ctype: "text/html"},
		{
			name: "list empty", opts: empty, path: "/ui/", code: 200, ctype: "text/html",
			want: []string{"No requests yet.", "Cluster &lt;b&gt;"}, wantNot: []string{"<table", "Cluster <b>"},
		},
		{name: "list source error", opts: failing, path: "/ui/", code: 500, ctype: "text/html", want: []string{"listing requests: etcd exploded"}},
		{name: "list head", opts: full, method: http.MethodHead, path: "/ui/", code: 200, ctype: "text/html", noBody: true},
		{
			name: "request", opts: full, path: "/ui/requests/req-1", code: 200, ctype: "text/html",
			want: []string{
				"<h1>Request req-1</h1>", "gqa-tiny", "<dt>TTFT</dt><dd>4.60 ms</dd>", "<dt>Completion tokens</dt><dd>8</dd>",
				"<dt>Finish</dt><dd>length</dd>", "<dt>Prefill group</dt><dd>prefill-0</dd>", "<dt>Ranks traced</dt><dd>4</dd>",
				`<svg xmlns="http://www.w3.org/2000/svg" class="trace-timeline"`, `<div id="tip" class="tip" role="tooltip" hidden></div>`,
				`<script src="/ui/static/tooltip.js" defer></script>`,
				`href="/ui/requests/req-1/perfetto.json" download`,
				// token 3: 6 + 9 - 0.2 ms after arrival, 3 ms after token 2.
				`<tr><td class="num">3</td><td class="num">521</td><td class="num">14.80</td><td class="num">3.00</td><td>decode-0</td><td class="num">1002</td></tr>`,
			},
			count: map[string]int{`<g class="lane"`: 4, `class="step"`: 2 + 2*7, `<tr><td class="num">`: 8},
		},
		{
			name: "request without perfetto", opts: noPerfetto, path: "/ui/requests/req-2", code: 200, ctype: "text/html",
			want: []string{"<h1>Request req-2</h1>"}, wantNot: []string{"perfetto.json"},
		},
		{
			name: "request with odd id", opts: full, path: "/ui/requests/" + url.PathEscape(weirdID), code: 200, ctype: "text/html",
			want: []string{
				"<h1>Request weird &lt;id&gt; &amp; &#34;x&#34;/y</h1>",
				`href="/ui/requests/weird%20%3Cid%3E%20&amp;%20%22x%22%2Fy/perfetto.json"`,
			},
			wantNot: []string{"<id>"},
		},
		{name: "unknown request", opts: full, path: "/ui/requests/nope", code: 404, ctype: "text/html", want: []string{"404 Not Found", "No trace for request &#34;nope&#34;"}},
		{name: "request source error", opts: failing, path: "/ui/requests/req-1", code: 500, ctype: "text/html", want: []string{"etcd exploded"}},
		{
			name: "perfetto", opts: full, path: "/ui/requests/req-2/perfetto.json", code: 200, ctype: "application/json",
			header: map[string]string{"Content-Disposition": `attachment; filename="tandem-trace-req-2.json"`},
			want:   []string{`{"traceEvents":[],"tokens":5}`}, skipHTML: true,
		},
		{
			name: "perfetto odd id", opts: full, path: "/ui/requests/" + url.PathEscape(weirdID) + "/perfetto.json", code: 200, ctype: "application/json",
			header: map[string]string{"Content-Disposition": `attachment; filename="tandem-trace-weird__id_____x__y.json"`}, skipHTML: true,
		},
		{name: "perfetto unknown", opts: full, path: "/ui/requests/nope/perfetto.json", code: 404, ctype: "text/html"},
		{name: "perfetto not configured", opts: noPerfetto, path: "/ui/requests/req-1/perfetto.json", code: 404, ctype: "text/html"},
		{name: "perfetto error", opts: badPerfetto, path: "/ui/requests/req-1/perfetto.json", code: 500, ctype: "text/html", want: []string{"no room for events"}},
		{
			name: "post list", opts: full, method: http.MethodPost, path: "/ui/", code: 405, ctype: "text/html",
			header: map[string]string{"Allow": "GET, HEAD"}, want: []string{"405 Method Not Allowed"},
		},
		{name: "delete request", opts: full, method: http.MethodDelete, path: "/ui/requests/req-1", code: 405, ctype: "text/html"},
		{name: "no such page", opts: full, path: "/ui/nothing/here", code: 404, ctype: "text/html", want: []string{"There is no page at /ui/nothing/here."}},
		{name: "css", opts: full, path: "/ui/static/style.css", code: 200, ctype: "text/css", want: []string{".tip[hidden]"}, skipHTML: true},
		{name: "js", opts: full, path: "/ui/static/tooltip.js", code: 200, ctype: "text/javascript", want: []string{`getElementById("tip")`}, skipHTML: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req := httptest.NewRequest(method, tt.path, nil)
			rec := httptest.NewRecorder()
			Handler(tt.opts).ServeHTTP(rec, req)
			res := rec.Result()
			body := rec.Body.String()

			if res.StatusCode != tt.code {
				t.Fatalf("%s %s: status %d, want %d\n%s", method, tt.path, res.StatusCode, tt.code, body)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tt.ctype) {
				t.Errorf("Content-Type %q, want %s...", ct, tt.ctype)
			}
			if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
			for k, v := range tt.header {
				if got := res.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tt.noBody {
				// The server drops a HEAD's body; the recorder keeps it.
				if res.Header.Get("Content-Length") == "" {
					t.Error("HEAD answer without Content-Length")
				}
				return
			}
			if !tt.skipHTML && !strings.HasPrefix(body, "<!DOCTYPE html>") {
				t.Errorf("body is not an HTML page:\n%.200s", body)
			}
			for _, s := range tt.want {
				if !strings.Contains(body, s) {
					t.Errorf("body lacks %q", s)
				}
			}
			for _, s := range tt.wantNot {
				if strings.Contains(body, s) {
					t.Errorf("body has %q", s)
				}
			}
			for s, n := range tt.count {
				if got := strings.Count(body, s); got != n {
					t.Errorf("%d × %q, want %d", got, s, n)
				}
			}
			at := 0
			for _, s := range tt.inOrder {
				i := strings.Index(body[at:], s)
				if i < 0 {
					t.Errorf("%q missing or out of order %v", s, tt.inOrder)
					break
				}
				at += i + len(s)
			}
			if t.Failed() {
				t.Logf("body:\n%s", body)
			}
		})
	}
}

func TestHandlerNeedsSource(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Handler without a Source did not panic")
		}
	}()
	Handler(Options{})
}
