package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progress draws a bar on a terminal (redrawn at most ten times a
// second) or, on anything else, a line at every tenth of the run.
type progress struct {
	mu             sync.Mutex
	w              io.Writer
	label          string
	total, n, fail int
	tty            bool
	start, drawn   time.Time
	lastTenth      int
}

func newProgress(w io.Writer, label string, total int) *progress {
	p := &progress{w: w, label: label, total: total, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	if w != nil {
		p.draw(true)
	}
	return p
}

func (p *progress) done(ok bool) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if !ok {
		p.fail++
	}
	p.draw(false)
}

func (p *progress) finish() {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

// draw writes the bar; callers hold mu.
func (p *progress) draw(first bool) {
	el := time.Since(p.start)
	rate := 0.0
	if s := el.Seconds(); s > 0 {
		rate = float64(p.n) / s
	}
	line := fmt.Sprintf("%s %d/%d requests, %d failed, %.2f req/s, %s", p.label, p.n, p.total, p.fail, rate, el.Truncate(time.Second))
	if p.tty {
		if !first && p.n < p.total && time.Since(p.drawn) < 100*time.Millisecond {
			return
		}
		p.drawn = time.Now()
		const width = 30
		n := width * p.n / max(1, p.total)
		fmt.Fprintf(p.w, "\r[%s%s] %s", strings.Repeat("#", n), strings.Repeat(".", width-n), line)
		return
	}
	tenth := 10 * p.n / max(1, p.total)
	if first || tenth > p.lastTenth {
		p.lastTenth = tenth
		fmt.Fprintln(p.w, line)
	}
}
