package traceui

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// findChromium returns a Chromium or Chrome binary, or skips the test when
// there is none, unless TANDEM_REQUIRE_CHROMIUM is set (CI sets it, so
// that a missing browser is a failure there, not a silent skip).
func findChromium(t *testing.T) string {
	t.Helper()
	names := []string{"chromium", "chromium-browser", "google-chrome"}
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("no browser binary on PATH (looked for %s); on Debian: apt-get install -y chromium", strings.Join(names, ", "))
	if os.Getenv("TANDEM_REQUIRE_CHROMIUM") != "" {
		t.Fatalf("%s (TANDEM_REQUIRE_CHROMIUM is set)", msg)
	}
	t.Skipf("%s; set TANDEM_REQUIRE_CHROMIUM=1 to make this a failure", msg)
	return ""
}

// consoleLog collects what the page writes to its console: console API
// calls, uncaught exceptions and browser log entries (failed loads, CSP
// violations). The listener runs on chromedp's reading goroutine, hence
// the lock.
type consoleLog struct {
	mu     sync.Mutex
	all    []string
	errors []string
}

func (c *consoleLog) listen(ev any) {
	var line string
	isError := false
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		var args []string
		for _, a := range ev.Args {
			if a.Value != nil {
				args = append(args, string(a.Value))
			} else {
				args = append(args, a.Description)
			}
		}
		line = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
		isError = ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		line = "exception: " + d.Text
		if d.Exception != nil {
			line += " " + d.Exception.Description
		}
		line += fmt.Sprintf(" at %s:%d:%d", d.URL, d.LineNumber, d.ColumnNumber)
		isError = true
	case *log.EventEntryAdded:
		e := ev.Entry
		line = fmt.Sprintf("log %s (%s): %s %s", e.Level, e.Source, e.Text, e.URL)
		isError = e.Level == log.EntryLevelError
	default:
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all = append(c.all, line)
	if isError {
		c.errors = append(c.errors, line)
	}
}

// check fails the test for every error-level message so far, and logs the
// others.
func (c *consoleLog) check(t *testing.T, page string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.all {
		t.Logf("%s console: %s", page, l)
	}
	for _, l := range c.errors {
		t.Errorf("%s: console error: %s", page, l)
	}
	c.all, c.errors = nil, nil
}

// saveScreenshot writes png to the test's temporary directory and, when
// TANDEM_SCREENSHOT_DIR is set, there too.
func saveScreenshot(t *testing.T, name string, png []byte) {
	t.Helper()
	dirs := []string{t.TempDir()}
	if d := os.Getenv("TANDEM_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("screenshot dir: %v", err)
		}
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatalf("write screenshot: %v", err)
		}
		t.Logf("screenshot: %s", p)
	}
}

// run runs actions with a limit of its own inside the test's deadline, so
// that a condition that never comes true names itself.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// TestBrowser loads both pages in headless Chromium: no console errors,
// a lane for every rank, a tooltip on hovering a step, and screenshots.
func TestBrowser(t *testing.T) {
	bin := findChromium(t)

	// 2 nodes: prefill-0 (TP-2) on node-a, decode-0 (TP-2) on node-b.
	trace := fixtureTrace("req-browser", fixtureArrival+1_000_000_000, 12)
	src := &fixtureSource{traces: []*tandemv1.RequestTrace{fixtureTrace("req-older", fixtureArrival, 4), trace}}
	srv := httptest.NewServer(Handler(Options{Source: src, Perfetto: fakePerfetto}))
	defer srv.Close()

	// One deadline for everything, browser start included.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 900),
	)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	var console consoleLog
	ctx, cancelTab := chromedp.NewContext(ctx, chromedp.WithListener(console.listen))
	defer cancelTab()

	// Start the browser and the tab on ctx itself: they live as long as
	// the context of the first call, and run gives its calls shorter ones.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}

	// The list page.
	run(t, ctx, "load /ui/", chromedp.Navigate(srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("table.requests")))
	if n := eval[int](t, ctx, `document.querySelectorAll("tr.request").length`); n != 2 {
		t.Errorf("list page has %d request rows, want 2", n)
	}
	href := eval[string](t, ctx, `document.querySelector("tr.request a").getAttribute("href")`)
	if href != "/ui/requests/req-browser" {
		t.Errorf("first row links to %q, want the newest request's page", href)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	saveScreenshot(t, "traceui-list.png", png)
	console.check(t, "/ui/")

	// The request page, reached through the link.
	run(t, ctx, "load the request page",
		chromedp.Navigate(srv.URL+href),
		chromedp.WaitVisible(chromedp.CSS("svg.trace-timeline")),
	)
	lanes := eval[int](t, ctx, `document.querySelectorAll("svg.trace-timeline g.lane").length`)
	if lanes != len(trace.GetRanks()) {
		t.Errorf("page has %d g.lane elements, want one per rank (%d)", lanes, len(trace.GetRanks()))
	}
	for _, r := range trace.GetRanks() {
		sel := fmt.Sprintf(`g.lane[data-node=%q][data-group=%q][data-rank="%d"]`, r.GetNode(), r.GetGroup(), r.GetRank())
		if n := eval[int](t, ctx, fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)); n != 1 {
			t.Errorf("%d elements match %s, want 1", n, sel)
		}
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("table.tokens tbody tr").length`); n != len(trace.GetTokens()) {
		t.Errorf("token table has %d rows, want %d", n, len(trace.GetTokens()))
	}
	if !eval[bool](t, ctx, `document.getElementById("tip").hidden`) {
		t.Error("tooltip visible before any hover")
	}

	// Hover the first decode step of decode-0/rank 0, in its upper half
	// where no collective is drawn.
	const step = `g.lane[data-group="decode-0"][data-rank="0"] rect.step`
	run(t, ctx, "scroll to a step", chromedp.ScrollIntoView(chromedp.CSS(step)))
	type point struct {
		X float64 `json:"x"`
		Y float64 `json:"y"`
	}
	at := eval[point](t, ctx, fmt.Sprintf(`(() => {
		const r = document.querySelector(%q).getBoundingClientRect();
		return {x: r.left + r.width / 2, y: r.top + r.height / 4};
	})()`, step))
	run(t, ctx, "hover the step and wait for the tooltip",
		chromedp.MouseEvent(chromedp.MouseMoved, at.X, at.Y),
		chromedp.WaitVisible(chromedp.CSS("#tip")),
	)
	tip := eval[string](t, ctx, `document.getElementById("tip").textContent`)
	for _, want := range []string{"step 1000 · decode", "tokens: 0 prefill, 1 decode", "collectives: 4"} {
		if !strings.Contains(tip, want) {
			t.Errorf("tooltip lacks %q:\n%s", want, tip)
		}
	}
	png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	saveScreenshot(t, "traceui-request.png", png)

	// Moving off the timeline hides it again.
	run(t, ctx, "leave the timeline",
		chromedp.MouseEvent(chromedp.MouseMoved, 5, 5),
		chromedp.WaitNotVisible(chromedp.CSS("#tip")),
	)
	console.check(t, href)
}
