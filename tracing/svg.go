package tracing

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// SVG layout, in px. The plot is a fixed width so that pages and
// screenshots of different requests compare at a glance; time is scaled
// to fit it.
const (
	svgWidth         = 1200
	svgLabelWidth    = 360 // lane labels left of the plot
	svgPlotLeft      = svgLabelWidth
	svgPlotWidth     = svgWidth - svgLabelWidth - 20
	svgTitleHeight   = 44 // request line and legend
	svgAxisHeight    = 24
	svgCoordHeight   = 26
	svgNodeHeight    = 20
	svgLaneHeight    = 36
	svgBottomPadding = 8
	svgMissingHeight = 16
	svgMinRectWidth  = 1 // so that a 5 µs step is still visible on a 2 s request
)

// Colours: one per step kind, the collective overlay, KV transfers and
// token ticks.
const (
	svgColorPrefill    = "#4e79a7"
	svgColorDecode     = "#59a14f"
	svgColorMixed      = "#b07aa1"
	svgColorOther      = "#9d9d9d"
	svgColorCollective = "#1f2937"
	svgColorKV         = "#e15759"
	svgColorToken      = "#f28e2b"
	svgColorMigration  = "#edc948"
	svgColorLaneA      = "#f7f7f9"
	svgColorLaneB      = "#eef0f4"
	svgColorGrid       = "#d5d8de"
	svgColorText       = "#222"
	svgColorSubtle     = "#666"
)

// WriteSVG writes t as an SVG swimlane timeline in the coordinator's
// clock: a coordinator lane with a tick per received token (and a band
// per migration to other groups), then one lane
// per rank, grouped by node, holding the rank's steps (coloured by
// prefill, decode or mixed batch), their collectives and the KV transfers
// the rank recorded. Every rect carries a <title> with its details so that
// hovering shows them. The output is a complete <svg> element without an
// XML declaration, fit for a file or for inlining in HTML; the same trace
// always gives the same bytes.
func WriteSVG(w io.Writer, t *tandemv1.RequestTrace) error {
	var b bytes.Buffer
	s := newSVGLayout(t)
	s.write(&b, t)
	// Written at once so that a failing writer never holds half an SVG
	// from us.
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("tracing: write svg: %w", err)
	}
	return nil
}

// svgLane is one rank's lane, in display order.
type svgLane struct {
	rank *tandemv1.RankTrace
	y    float64
}

// svgNode is a node header followed by its lanes.
type svgNode struct {
	name  string
	y     float64
	lanes []svgLane
}

// svgLayout holds the time domain and the vertical placement.
type svgLayout struct {
	t0, t1  int64 // plotted domain, coordinator Unix ns
	origin  int64 // 0 ms on the scale: the request's arrival
	nodes   []svgNode
	coordY  float64
	height  float64
	missing float64 // y of the missing ranks' lines
}

func newSVGLayout(t *tandemv1.RequestTrace) *svgLayout {
	l := &svgLayout{}
	l.t0, l.t1 = svgTimeDomain(t)
	l.origin = t.GetArrivalUnixNanos()
	if l.origin == 0 {
		l.origin = l.t0
	}

	ranks := append([]*tandemv1.RankTrace(nil), t.GetRanks()...)
	sort.SliceStable(ranks, func(i, j int) bool {
		a, b := ranks[i], ranks[j]
		if ra, rb := svgRoleOrder(a.GetRole()), svgRoleOrder(b.GetRole()); ra != rb {
			return ra < rb
		}
		if a.GetGroup() != b.GetGroup() {
			return a.GetGroup() < b.GetGroup()
		}
		if a.GetRank() != b.GetRank() {
			return a.GetRank() < b.GetRank()
		}
		return a.GetNode() < b.GetNode()
	})
	// Nodes appear in the order of their first lane, so the nodes holding
	// prefill ranks come before those holding decode ranks.
	index := map[string]int{}
	for _, r := range ranks {
		i, ok := index[r.GetNode()]
		if !ok {
			i = len(l.nodes)
			index[r.GetNode()] = i
			l.nodes = append(l.nodes, svgNode{name: r.GetNode()})
		}
		l.nodes[i].lanes = append(l.nodes[i].lanes, svgLane{rank: r})
	}

	y := float64(svgTitleHeight + svgAxisHeight)
	l.coordY = y
	y += svgCoordHeight
	for i := range l.nodes {
		n := &l.nodes[i]
		n.y = y
		y += svgNodeHeight
		for j := range n.lanes {
			n.lanes[j].y = y
			y += svgLaneHeight
		}
	}
	l.missing = y
	y += float64(len(t.GetMissingRanks())) * svgMissingHeight
	l.height = y + svgBottomPadding
	return l
}

// svgTimeDomain is arrival to end, widened to take in every event: a rank's
// time can fall outside by its clock error, and a running request has no
// end yet.
func svgTimeDomain(t *tandemv1.RequestTrace) (lo, hi int64) {
	lo, hi = t.GetArrivalUnixNanos(), t.GetEndUnixNanos()
	first := true
	see := func(a, b int64) {
		if first && lo == 0 {
			lo = a
		}
		first = false
		if a < lo {
			lo = a
		}
		if b > hi {
			hi = b
		}
	}
	for _, tok := range t.GetTokens() {
		see(tok.GetUnixNanos(), tok.GetUnixNanos())
	}
	for _, r := range t.GetRanks() {
		off := r.GetClockOffsetNanos()
		for _, s := range r.GetSteps() {
			start := s.GetStartUnixNanos() + off
			see(start, start+svgStepNanos(s))
		}
		for _, kv := range r.GetKvTransfers() {
			start := kv.GetStartUnixNanos() + off
			see(start, start+kv.GetDurationNanos())
		}
	}
	if hi <= lo {
		hi = lo + 1e6 // an empty trace still gets a 1 ms scale
	}
	return lo, hi
}

// svgStepNanos is a step's span from its start: choosing the batch, the
// forward pass, sampling. Queue wait precedes the start.
func svgStepNanos(s *tandemv1.StepTrace) int64 {
	return s.GetScheduleNanos() + s.GetComputeNanos() + s.GetSampleNanos()
}

func (l *svgLayout) x(t int64) float64 {
	return svgPlotLeft + float64(t-l.t0)/float64(l.t1-l.t0)*svgPlotWidth
}

// width maps a duration to px, at least svgMinRectWidth.
func (l *svgLayout) width(d int64) float64 {
	return math.Max(float64(d)/float64(l.t1-l.t0)*svgPlotWidth, svgMinRectWidth)
}

func (l *svgLayout) write(b *bytes.Buffer, t *tandemv1.RequestTrace) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" class="trace-timeline" width="%d" height="%s" viewBox="0 0 %d %s" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="11" fill="%s">`+"\n",
		svgWidth, svgNum(l.height), svgWidth, svgNum(l.height), svgColorText)
	l.writeHeader(b, t)
	// Backgrounds first, then the grid, then what the lanes hold, so that
	// the grid shows through the lanes but not through the steps.
	l.writeBackgrounds(b, t)
	l.writeAxis(b)
	l.writeCoordinator(b, t)
	for _, n := range l.nodes {
		fmt.Fprintf(b, `<g class="node" data-node="%s">`+"\n", svgEsc(n.name))
		fmt.Fprintf(b, `<text class="node-header" x="6" y="%s" font-weight="bold" font-size="12">%s</text>`+"\n",
			svgNum(n.y+14), svgEsc(svgNodeName(n.name)))
		for _, ln := range n.lanes {
			l.writeLane(b, ln)
		}
		b.WriteString("</g>\n")
	}
	for i, m := range t.GetMissingRanks() {
		fmt.Fprintf(b, `<text class="missing" x="6" y="%s" fill="%s">missing rank: %s</text>`+"\n",
			svgNum(l.missing+float64(i)*svgMissingHeight+12), svgColorKV, svgEsc(m))
	}
	b.WriteString("</svg>\n")
}

func (l *svgLayout) writeHeader(b *bytes.Buffer, t *tandemv1.RequestTrace) {
	head := "request " + t.GetRequestId()
	if t.GetModel() != "" {
		head += " · " + t.GetModel()
	}
	head += fmt.Sprintf(" · %d prompt tokens · %d output tokens · %s ms",
		t.GetPromptTokens(), len(t.GetTokens()), svgMS(l.t1-l.origin))
	fmt.Fprintf(b, `<text class="headline" x="6" y="16" font-size="13" font-weight="bold">%s</text>`+"\n", svgEsc(head))
	legend := []struct{ color, label string }{
		{svgColorPrefill, "prefill step"},
		{svgColorDecode, "decode step"},
		{svgColorMixed, "mixed step"},
		{svgColorCollective, "collective"},
		{svgColorKV, "KV transfer"},
		{svgColorToken, "token received"},
	}
	if len(t.GetMigrations()) > 0 {
		legend = append(legend, struct{ color, label string }{svgColorMigration, "migration"})
	}
	x := 6.0
	for _, e := range legend {
		fmt.Fprintf(b, `<rect class="legend" x="%s" y="26" width="10" height="10" fill="%s"><title>%s</title></rect>`,
			svgNum(x), e.color, svgEsc(e.label))
		fmt.Fprintf(b, `<text x="%s" y="35" fill="%s">%s</text>`+"\n", svgNum(x+14), svgColorSubtle, svgEsc(e.label))
		x += 14 + 7*float64(len(e.label)) + 16
	}
}

// writeAxis writes the ms scale (0 = arrival) and its grid lines through
// every lane.
func (l *svgLayout) writeAxis(b *bytes.Buffer) {
	spanMS := float64(l.t1-l.t0) / 1e6
	step := svgNiceStep(spanMS / 8)
	decimals := 0
	if step < 1 {
		decimals = int(math.Ceil(-math.Log10(step)))
	}
	top := float64(svgTitleHeight)
	bottom := l.height - svgBottomPadding
	b.WriteString(`<g class="axis">` + "\n")
	fmt.Fprintf(b, `<text x="6" y="%s" fill="%s">ms since arrival</text>`+"\n", svgNum(top+15), svgColorSubtle)
	first := math.Ceil(float64(l.t0-l.origin) / 1e6 / step)
	last := math.Floor(float64(l.t1-l.origin) / 1e6 / step)
	for k := first; k <= last; k++ {
		v := k * step
		x := l.x(l.origin + int64(math.Round(v*1e6)))
		label := strconv.FormatFloat(v, 'f', decimals, 64)
		if label == "-0" {
			label = "0"
		}
		fmt.Fprintf(b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1"/>`,
			svgNum(x), svgNum(top+svgAxisHeight-4), svgNum(x), svgNum(bottom), svgColorGrid)
		fmt.Fprintf(b, `<text x="%s" y="%s" text-anchor="middle" fill="%s">%s</text>`+"\n",
			svgNum(x), svgNum(top+14), svgColorSubtle, svgEsc(label))
	}
	b.WriteString("</g>\n")
}

func (l *svgLayout) writeCoordinator(b *bytes.Buffer, t *tandemv1.RequestTrace) {
	y := l.coordY
	b.WriteString(`<g class="coordinator">` + "\n")
	fmt.Fprintf(b, `<text class="lane-label" x="6" y="%s" font-weight="bold">coordinator</text>`+"\n", svgNum(y+17))
	if a := t.GetArrivalUnixNanos(); a != 0 {
		fmt.Fprintf(b, `<rect class="arrival" x="%s" y="%s" width="2" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
			svgNum(l.x(a)-1), svgNum(y+2), svgCoordHeight-4, svgColorText,
			svgEsc(fmt.Sprintf("arrival\ntokenize %s ms\n%d prompt tokens", svgMS(t.GetTokenizeNanos()), t.GetPromptTokens())))
	}
	for i, m := range t.GetMigrations() {
		from, to := m.GetUnixNanos(), max(m.GetUnixNanos(), m.GetResumedUnixNanos())
		title := fmt.Sprintf("migration %d at +%s ms: %s failed the request after %d tokens\n%s: %s\nresumed on %s %s after %s ms",
			i+1, svgMS(from-l.origin), m.GetFromGroup(), m.GetTokensBefore(), m.GetReason(), m.GetErrorMessage(),
			m.GetPrefillGroup(), m.GetDecodeGroup(), svgMS(to-from))
		fmt.Fprintf(b, `<rect class="migration" x="%s" y="%s" width="%s" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
			svgNum(l.x(from)-1), svgNum(y+2), svgNum(max(2, l.width(to-from))), svgCoordHeight-4, svgColorMigration, svgEsc(title))
	}
	prev := t.GetArrivalUnixNanos()
	for _, tok := range t.GetTokens() {
		at := tok.GetUnixNanos()
		title := fmt.Sprintf("token %d · id %d\n+%s ms since arrival (gap %s ms)\ngroup %s · step %d",
			tok.GetIndex(), tok.GetTokenId(), svgMS(at-l.origin), svgMS(at-prev), tok.GetGroup(), tok.GetStep())
		prev = at
		fmt.Fprintf(b, `<rect class="token" data-index="%d" x="%s" y="%s" width="2" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
			tok.GetIndex(), svgNum(l.x(at)-1), svgNum(y+5), svgCoordHeight-10, svgColorToken, svgEsc(title))
	}
	b.WriteString("</g>\n")
}

// writeBackgrounds writes the lanes' stripes; each explains its lane
// when hovered.
func (l *svgLayout) writeBackgrounds(b *bytes.Buffer, t *tandemv1.RequestTrace) {
	b.WriteString(`<g class="backgrounds">` + "\n")
	fmt.Fprintf(b, `<rect class="lane-bg" x="0" y="%s" width="%d" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
		svgNum(l.coordY), svgWidth, svgCoordHeight, svgColorLaneB,
		svgEsc(fmt.Sprintf("coordinator: %d tokens received", len(t.GetTokens()))))
	i := 0
	for _, n := range l.nodes {
		for _, ln := range n.lanes {
			r := ln.rank
			bg := svgColorLaneA
			if i%2 == 1 {
				bg = svgColorLaneB
			}
			i++
			title := fmt.Sprintf("%s\naddr %s\nclock offset %s µs ± %s µs\n%d steps · %d KV transfers",
				svgLaneLabel(r), r.GetAddr(), svgUS(r.GetClockOffsetNanos()), svgUS(r.GetClockErrorNanos()),
				len(r.GetSteps()), len(r.GetKvTransfers()))
			fmt.Fprintf(b, `<rect class="lane-bg" x="0" y="%s" width="%d" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
				svgNum(ln.y), svgWidth, svgLaneHeight, bg, svgEsc(title))
		}
	}
	b.WriteString("</g>\n")
}

// svgLaneLabel is "node · group/rank N (role)".
func svgLaneLabel(r *tandemv1.RankTrace) string {
	return fmt.Sprintf("%s · %s/rank %d (%s)", svgNodeName(r.GetNode()), r.GetGroup(), r.GetRank(), r.GetRole().Name())
}

func (l *svgLayout) writeLane(b *bytes.Buffer, ln svgLane) {
	r, y := ln.rank, ln.y
	fmt.Fprintf(b, `<g class="lane" data-node="%s" data-group="%s" data-rank="%d" data-role="%s">`+"\n",
		svgEsc(r.GetNode()), svgEsc(r.GetGroup()), r.GetRank(), svgEsc(r.GetRole().Name()))
	fmt.Fprintf(b, `<text class="lane-label" x="16" y="%s">%s</text>`, svgNum(y+15), svgEsc(svgLaneLabel(r)))
	fmt.Fprintf(b, `<text class="lane-clock" x="16" y="%s" fill="%s">clock %s ms ± %s µs</text>`+"\n",
		svgNum(y+28), svgColorSubtle, svgEsc(svgSignedMS(r.GetClockOffsetNanos())), svgEsc(svgUS(r.GetClockErrorNanos())))

	off := r.GetClockOffsetNanos()
	for _, s := range r.GetSteps() {
		start := s.GetStartUnixNanos() + off
		kind, color := svgStepKind(s)
		fmt.Fprintf(b, `<rect class="step" data-step="%d" data-kind="%s" x="%s" y="%s" width="%s" height="20" fill="%s"><title>%s</title></rect>`+"\n",
			s.GetStep(), kind, svgNum(l.x(start)), svgNum(y+4), svgNum(l.width(svgStepNanos(s))), color,
			svgEsc(svgStepTitle(s, kind, start-l.origin)))
		// Collectives are drawn inside their step, in its lower half.
		for _, c := range s.GetCollectives() {
			cstart := start + c.GetOffsetNanos()
			title := fmt.Sprintf("%s · %s · %s ms\nstep %d, +%s ms into the step",
				c.GetKind(), svgByteSize(c.GetBytes()), svgMS(c.GetDurationNanos()), s.GetStep(), svgMS(c.GetOffsetNanos()))
			fmt.Fprintf(b, `<rect class="collective" data-step="%d" x="%s" y="%s" width="%s" height="8" fill="%s" fill-opacity="0.6"><title>%s</title></rect>`+"\n",
				s.GetStep(), svgNum(l.x(cstart)), svgNum(y+14), svgNum(l.width(c.GetDurationNanos())), svgColorCollective, svgEsc(title))
		}
	}
	// KV transfers get their own strip under the steps: they overlap the
	// steps in time.
	for _, kv := range r.GetKvTransfers() {
		start := kv.GetStartUnixNanos() + off
		title := fmt.Sprintf("KV transfer, layer %d\nprefill rank %d → decode rank %d\n%s · %s ms · %s\nat +%s ms",
			kv.GetLayer(), kv.GetSourceRank(), kv.GetDestRank(), svgByteSize(kv.GetBytes()), svgMS(kv.GetDurationNanos()),
			svgRate(kv.GetBytes(), kv.GetDurationNanos()), svgMS(start-l.origin))
		fmt.Fprintf(b, `<rect class="kv" data-layer="%d" x="%s" y="%s" width="%s" height="7" fill="%s"><title>%s</title></rect>`+"\n",
			kv.GetLayer(), svgNum(l.x(start)), svgNum(y+26), svgNum(l.width(kv.GetDurationNanos())), svgColorKV, svgEsc(title))
	}
	b.WriteString("</g>\n")
}

func svgStepTitle(s *tandemv1.StepTrace, kind string, since int64) string {
	var t strings.Builder
	fmt.Fprintf(&t, "step %d · %s\n", s.GetStep(), kind)
	fmt.Fprintf(&t, "tokens: %d prefill, %d decode\n", s.GetPrefillTokens(), s.GetDecodeTokens())
	fmt.Fprintf(&t, "start +%s ms · span %s ms\n", svgMS(since), svgMS(svgStepNanos(s)))
	fmt.Fprintf(&t, "queue %s ms · schedule %s ms · compute %s ms · sample %s ms\n",
		svgMS(s.GetQueueNanos()), svgMS(s.GetScheduleNanos()), svgMS(s.GetComputeNanos()), svgMS(s.GetSampleNanos()))
	var cbytes, cnanos int64
	for _, c := range s.GetCollectives() {
		cbytes += c.GetBytes()
		cnanos += c.GetDurationNanos()
	}
	fmt.Fprintf(&t, "collectives: %d · %s · %s ms\n", len(s.GetCollectives()), svgByteSize(cbytes), svgMS(cnanos))
	fmt.Fprintf(&t, "free KV blocks %d", s.GetFreeBlocks())
	for i, o := range s.GetOps() {
		sep := " · "
		if i == 0 {
			sep = "\nops: "
		}
		fmt.Fprintf(&t, "%s%s %s ms", sep, o.GetOp(), svgMS(o.GetNanos()))
	}
	if g := s.GetGpu(); g != nil {
		fmt.Fprintf(&t, "\nGPU %.0f%% · %s · %.0f W · %d MHz",
			g.GetUtilizationPercent(), svgByteSize(g.GetMemoryUsedBytes()), g.GetPowerWatts(), g.GetSmClockMhz())
	}
	for _, q := range s.GetSeqs() {
		what := "decode"
		if q.GetPrefill() {
			what = "prefill"
		}
		fmt.Fprintf(&t, "\n%s: %d %s rows at %d", q.GetRequestId(), q.GetTokens(), what, q.GetPosition())
		if q.GetSampled() {
			t.WriteString(", sampled")
		}
	}
	return t.String()
}

// svgStepKind names a step's batch and gives its colour. Ranks other than 0
// may record no row counts; those steps are "step".
func svgStepKind(s *tandemv1.StepTrace) (kind, color string) {
	p, d := s.GetPrefillTokens() > 0, s.GetDecodeTokens() > 0
	switch {
	case p && d:
		return "mixed", svgColorMixed
	case p:
		return "prefill", svgColorPrefill
	case d:
		return "decode", svgColorDecode
	}
	return "step", svgColorOther
}

// svgRoleOrder puts prefill lanes before decode and unified ones.
func svgRoleOrder(r tandemv1.Role) int {
	switch r {
	case tandemv1.Role_ROLE_PREFILL:
		return 0
	case tandemv1.Role_ROLE_DECODE:
		return 1
	case tandemv1.Role_ROLE_UNIFIED:
		return 2
	}
	return 3
}

func svgNodeName(n string) string {
	if n == "" {
		return "(unknown node)"
	}
	return n
}

// svgNiceStep rounds raw up to 1, 2 or 5 times a power of ten.
func svgNiceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// svgEsc escapes s for XML text and attribute values (quotes included).
func svgEsc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder never fails
	return b.String()
}

// svgNum formats a coordinate with at most two decimals.
func svgNum(v float64) string {
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}

// svgMS formats nanoseconds as milliseconds with two decimals.
func svgMS(ns int64) string {
	return strconv.FormatFloat(float64(ns)/1e6, 'f', 2, 64)
}

// svgSignedMS formats a clock offset as milliseconds with its sign.
func svgSignedMS(ns int64) string {
	if ns >= 0 {
		return "+" + strconv.FormatFloat(float64(ns)/1e6, 'f', 3, 64)
	}
	return strconv.FormatFloat(float64(ns)/1e6, 'f', 3, 64)
}

// svgUS formats nanoseconds as microseconds with one decimal.
func svgUS(ns int64) string {
	return strconv.FormatFloat(float64(ns)/1e3, 'f', 1, 64)
}

func svgByteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 2, 64) + " GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 2, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

// svgRate is bytes over nanoseconds as MB/s (10^6 bytes, as link speeds are).
func svgRate(n, ns int64) string {
	if ns <= 0 {
		return "- MB/s"
	}
	return strconv.FormatFloat(float64(n)/(float64(ns)/1e9)/1e6, 'f', 1, 64) + " MB/s"
}
