package traceui

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/tracing"
)

// Source is what the pages need from the coordinator (it implements it).
type Source interface {
	// ListRequests returns at most limit recent requests, newest first.
	ListRequests(ctx context.Context, limit int) ([]*tandemv1.RequestSummary, error)
	// GetTrace returns a request's trace, or an error whose gRPC status
	// code (status.Code(err)) is codes.NotFound for an unknown id.
	GetTrace(ctx context.Context, requestID string) (*tandemv1.RequestTrace, error)
}

// Options configure Handler.
type Options struct {
	// Source provides the requests and traces; required.
	Source Source
	// Perfetto, when set, writes a trace as Perfetto (Chrome trace event)
	// JSON; request pages then link to /ui/requests/{id}/perfetto.json.
	Perfetto func(io.Writer, *tandemv1.RequestTrace) error
	// Title heads every page. Default "Tandem traces".
	Title string
}

// Default and largest number of requests on the list page.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// contentSecurityPolicy lets the pages use only the handler's own script
// and stylesheet; inline SVG attributes are not styles, so they pass.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"

//go:embed assets
var assets embed.FS

// ui holds the parsed templates; it is read-only once Handler returns.
type ui struct {
	opts                             Options
	listPage, requestPage, errorPage *template.Template
}

// Handler returns the handler of the pages under /ui/. It panics if
// opts.Source is nil.
func Handler(opts Options) http.Handler {
	if opts.Source == nil {
		panic("traceui: Options.Source is required")
	}
	if opts.Title == "" {
		opts.Title = "Tandem traces"
	}
	u := &ui{
		opts:        opts,
		listPage:    parsePage("list.html"),
		requestPage: parsePage("request.html"),
		errorPage:   parsePage("error.html"),
	}
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		panic(fmt.Sprintf("traceui: embedded assets: %v", err)) // cannot happen: the directory is embedded
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/{$}", u.serveList)
	mux.HandleFunc("GET /ui/requests/{id}", u.serveRequest)
	if opts.Perfetto != nil {
		mux.HandleFunc("GET /ui/requests/{id}/perfetto.json", u.servePerfetto)
	}
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	// Everything else under /ui/: GET patterns above do not match other
	// methods, so this is also where a POST to a page lands.
	mux.HandleFunc("/ui/", u.serveOther)
	return securityHeaders(mux)
}

// parsePage parses the layout with one page's content; the templates are
// embedded, so an error is a bug caught by any test.
func parsePage(name string) *template.Template {
	return template.Must(template.New("layout.html").ParseFS(assets, "assets/layout.html", "assets/"+name))
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// page is what the layout needs; Content is the page's own data.
type page struct {
	Site    string
	Heading string
	Script  bool // the tooltip script, for pages with a timeline
	Content any
}

type listRow struct {
	ID, Href           string
	Arrival            string
	Prompt, Completion int32
	TTFT, TPOT         string
	Finish             string
	Groups             string
}

type listContent struct {
	Rows  []listRow
	Limit int
}

func (u *ui) serveList(w http.ResponseWriter, r *http.Request) {
	limit := defaultLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			u.serveError(w, http.StatusBadRequest, fmt.Sprintf("limit must be a positive integer, not %q", s))
			return
		}
		limit = min(n, maxLimit)
	}
	reqs, err := u.opts.Source.ListRequests(r.Context(), limit)
	if err != nil {
		u.serveError(w, http.StatusInternalServerError, fmt.Sprintf("listing requests: %v", err))
		return
	}
	c := listContent{Limit: limit}
	for _, s := range reqs {
		c.Rows = append(c.Rows, listRow{
			ID:         s.GetRequestId(),
			Href:       requestPath(s.GetRequestId()),
			Arrival:    formatTime(s.GetArrivalUnixNanos()),
			Prompt:     s.GetPromptTokens(),
			Completion: s.GetCompletionTokens(),
			TTFT:       formatMS(s.GetTtftMs()),
			TPOT:       formatMS(s.GetTpotMs()),
			Finish:     finishName(s.GetFinishReason()),
			Groups:     strings.Join(s.GetGroups(), " → "),
		})
	}
	u.render(w, http.StatusOK, u.listPage, page{Site: u.opts.Title, Heading: "Recent requests", Content: c})
}

type figure struct{ Name, Value string }

type tokenRow struct {
	Index, TokenID int32
	Since, Gap     string
	Group          string
	Step           uint64
}

type requestContent struct {
	ID          string
	Figures     []figure
	Missing     []string
	SVG         template.HTML
	Tokens      []tokenRow
	PerfettoURL string
}

func (u *ui) serveRequest(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	t, ok := u.getTrace(w, r, id)
	if !ok {
		return
	}
	var svg bytes.Buffer
	if err := tracing.WriteSVG(&svg, t); err != nil {
		u.serveError(w, http.StatusInternalServerError, fmt.Sprintf("drawing the timeline: %v", err))
		return
	}
	c := requestContent{
		ID:      t.GetRequestId(),
		Figures: figures(t),
		Missing: t.GetMissingRanks(),
		// WriteSVG escapes every text it writes, so its output is safe
		// to inline.
		SVG: template.HTML(svg.String()),
	}
	if c.ID == "" {
		c.ID = id
	}
	if u.opts.Perfetto != nil {
		c.PerfettoURL = requestPath(id) + "/perfetto.json"
	}
	arrival, prev := t.GetArrivalUnixNanos(), t.GetArrivalUnixNanos()
	for _, tok := range t.GetTokens() {
		c.Tokens = append(c.Tokens, tokenRow{
			Index:   tok.GetIndex(),
			TokenID: tok.GetTokenId(),
			Since:   formatNanosMS(tok.GetUnixNanos() - arrival),
			Gap:     formatNanosMS(tok.GetUnixNanos() - prev),
			Group:   tok.GetGroup(),
			Step:    tok.GetStep(),
		})
		prev = tok.GetUnixNanos()
	}
	u.render(w, http.StatusOK, u.requestPage, page{Site: u.opts.Title, Heading: "Request " + c.ID, Script: true, Content: c})
}

func (u *ui) servePerfetto(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	t, ok := u.getTrace(w, r, id)
	if !ok {
		return
	}
	// Buffered so that a failure is a 500, not a truncated download.
	var b bytes.Buffer
	if err := u.opts.Perfetto(&b, t); err != nil {
		u.serveError(w, http.StatusInternalServerError, fmt.Sprintf("writing the Perfetto trace: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", `attachment; filename="tandem-trace-`+fileSafe(id)+`.json"`)
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	_, _ = w.Write(b.Bytes()) // the client went away; nothing to tell it
}

// getTrace fetches a trace, serving the 404 or 500 page when it cannot.
func (u *ui) getTrace(w http.ResponseWriter, r *http.Request, id string) (*tandemv1.RequestTrace, bool) {
	t, err := u.opts.Source.GetTrace(r.Context(), id)
	switch {
	case status.Code(err) == codes.NotFound:
		u.serveError(w, http.StatusNotFound, fmt.Sprintf("No trace for request %q: the coordinator never saw it, or it has left the coordinator's history.", id))
		return nil, false
	case err != nil:
		u.serveError(w, http.StatusInternalServerError, fmt.Sprintf("getting the trace of request %q: %v", id, err))
		return nil, false
	case t == nil:
		u.serveError(w, http.StatusInternalServerError, fmt.Sprintf("getting the trace of request %q: the source returned no trace", id))
		return nil, false
	}
	return t, true
}

func (u *ui) serveOther(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		u.serveError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed here; the pages only answer GET.", r.Method))
		return
	}
	u.serveError(w, http.StatusNotFound, fmt.Sprintf("There is no page at %s.", r.URL.Path))
}

type errorContent struct {
	Code    int
	Status  string
	Message string
}

func (u *ui) serveError(w http.ResponseWriter, code int, msg string) {
	u.render(w, code, u.errorPage, page{
		Site:    u.opts.Title,
		Heading: fmt.Sprintf("%d %s", code, http.StatusText(code)),
		Content: errorContent{Code: code, Status: http.StatusText(code), Message: msg},
	})
}

// render executes a page into a buffer first, so that a template error
// becomes a 500 rather than half a page under a 200.
func (u *ui) render(w http.ResponseWriter, code int, t *template.Template, p page) {
	var b bytes.Buffer
	if err := t.Execute(&b, p); err != nil {
		http.Error(w, fmt.Sprintf("traceui: rendering %s: %v", t.Name(), err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store") // traces of running requests change
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes()) // the client went away; nothing to tell it
}

// figures are a request's headline numbers, computed in the coordinator's
// clock from what it received.
func figures(t *tandemv1.RequestTrace) []figure {
	arrival, toks := t.GetArrivalUnixNanos(), t.GetTokens()
	f := []figure{
		{"Model", orDash(t.GetModel())},
		{"Arrival", formatTime(arrival)},
		{"Finish", finishName(t.GetFinishReason())},
		{"Prompt tokens", strconv.Itoa(int(t.GetPromptTokens()))},
		{"Completion tokens", strconv.Itoa(len(toks))},
		{"Tokenize", formatNanosMS(t.GetTokenizeNanos()) + " ms"},
	}
	ttft, tpot, e2e, rate := "-", "-", "-", "-"
	if len(toks) > 0 {
		first, last := toks[0].GetUnixNanos(), toks[len(toks)-1].GetUnixNanos()
		ttft = formatNanosMS(first-arrival) + " ms"
		if len(toks) > 1 {
			per := float64(last-first) / float64(len(toks)-1)
			tpot = strconv.FormatFloat(per/1e6, 'f', 2, 64) + " ms"
			if last > first {
				rate = strconv.FormatFloat(float64(len(toks)-1)/(float64(last-first)/1e9), 'f', 1, 64) + " tok/s"
			}
		}
	}
	if end := t.GetEndUnixNanos(); end != 0 {
		e2e = formatNanosMS(end-arrival) + " ms"
	}
	f = append(f,
		figure{"TTFT", ttft},
		figure{"TPOT", tpot},
		figure{"Decode rate", rate},
		figure{"End to end", e2e},
		figure{"Prefill group", orDash(t.GetPrefillGroup())},
		figure{"Decode group", orDash(t.GetDecodeGroup())},
		figure{"Ranks traced", strconv.Itoa(len(t.GetRanks()))},
	)
	return f
}

// requestPath is the page of a request; the id is one escaped path
// segment, whatever it holds.
func requestPath(id string) string {
	return "/ui/requests/" + url.PathEscape(id)
}

func formatTime(unixNanos int64) string {
	if unixNanos == 0 {
		return "-"
	}
	return time.Unix(0, unixNanos).UTC().Format("2006-01-02 15:04:05.000 UTC")
}

func formatMS(ms float64) string {
	return strconv.FormatFloat(ms, 'f', 2, 64)
}

func formatNanosMS(ns int64) string {
	return strconv.FormatFloat(float64(ns)/1e6, 'f', 2, 64)
}

// finishName is "stop", "length", ... or "running".
func finishName(f tandemv1.FinishReason) string {
	if f == tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED {
		return "running"
	}
	return strings.ToLower(strings.TrimPrefix(f.String(), "FINISH_REASON_"))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fileSafe keeps a download's file name to letters, digits, '.', '-' and
// '_', so that no id can break the Content-Disposition header.
func fileSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
		if !ok {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "request"
	}
	return string(b)
}
