package tracing

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// WriteTable writes the per-token table of a trace (Breakdown's figures,
// one row per token), a blank line, the summary row and the clock error
// bound of each rank.
func WriteTable(w io.Writer, t *tandemv1.RequestTrace) error {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "token\tstep\tnode/group/rank\tqueue ms\tcompute ms\tallreduce n/bytes/ms\tKV ms\tsampling ms\tother ms\tITL ms")
	for _, c := range Breakdown(t) {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%.2f\t%.2f\t%d/%s/%.2f\t%.2f\t%.2f\t%.2f\t%.2f\n",
			c.Index, c.Step, label(c.Node, c.Group, int32(c.Rank)),
			ms(c.Queue), ms(c.Compute), c.AllreduceCount, formatBytes(c.AllreduceBytes), ms(c.Allreduce),
			ms(c.KVTransfer), ms(c.Sampling), ms(c.Other), ms(c.ITL))
	}
	tw.Flush()
	b.WriteByte('\n')
	writeSummary(&b, Summarize(t))
	var errs []string
	for _, r := range orderedRanks(t) {
		errs = append(errs, fmt.Sprintf("%s ±%v", rankLabel(r), time.Duration(r.GetClockErrorNanos())))
	}
	fmt.Fprintf(&b, "clock error: %s\n", strings.Join(errs, ", "))
	writeMigrations(&b, t)
	if m := t.GetMissingRanks(); len(m) > 0 {
		fmt.Fprintf(&b, "missing: %s\n", strings.Join(m, "; "))
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("tracing: write table: %w", err)
	}
	return nil
}

// writeMigrations writes a line per move of the request to other groups:
// when (ms after the arrival), which group failed it and why, after how
// many tokens, where it went and how long finding it took.
func writeMigrations(w io.Writer, t *tandemv1.RequestTrace) {
	for i, m := range t.GetMigrations() {
		to := m.GetDecodeGroup()
		if p := m.GetPrefillGroup(); p != "" {
			to = p + " > " + to
		} else {
			to += " (recomputing the prompt)"
		}
		fmt.Fprintf(w, "migration %d at %.2f ms: %s failed the request after %d tokens (%s: %s); resumed on %s after %.2f ms as %s\n",
			i+1, ms(time.Duration(m.GetUnixNanos()-t.GetArrivalUnixNanos())), m.GetFromGroup(), m.GetTokensBefore(),
			m.GetReason(), m.GetErrorMessage(), to, ms(time.Duration(m.GetResumedUnixNanos()-m.GetUnixNanos())), m.GetWorkerRequestId())
	}
}

// writeSummary writes the summary row in `tandem generate`'s format.
func writeSummary(w io.Writer, s Summary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "prompt_len\ttokenize ms\tTTFT ms\tsteady ms\ttokens\tms/token\ttok/s\tpeak RSS MB")
	fmt.Fprintf(tw, "%d\t%.2f\t%.2f\t%.2f\t%d\t%.2f\t%.1f\t%.0f\n",
		s.PromptLen, s.TokenizeMs, s.TTFTMs, s.SteadyMs, s.Tokens, s.MsPerToken, s.TokensPerS, s.PeakRSSMB)
	tw.Flush()
}

// Timeline characters.
const (
	markPrefill   = '#'
	markDecode    = '='
	markMixed     = '+'
	markKV        = '~'
	markIdle      = '.'
	markTokenize  = 'T'
	markToken     = '^'
	markMigration = 'M' // a group failed the request, until other groups took it
)

// WriteTimeline writes a text timeline of a trace, width columns wide
// (100 when width <= 0): a line for the coordinator (tokenizing, each
// token received) and one per rank (node/group/rank) with its steps and
// KV transfers, on a time axis from the arrival to the end, in
// coordinator time; then a scale and a legend.
func WriteTimeline(w io.Writer, t *tandemv1.RequestTrace, width int) error {
	if width <= 0 {
		width = 100
	}
	width = max(width, 10)
	t0, t1 := timeDomain(t)
	col := func(ns int64) int {
		return min(width-1, max(0, int((ns-t0)*int64(width)/(t1-t0))))
	}
	// fill marks [from, to) in coordinator time, at least one column.
	fill := func(line []byte, from, to int64, c byte) {
		a, z := col(from), col(max(from, to-1))
		for i := a; i <= z; i++ {
			line[i] = c
		}
	}

	ranks := orderedRanks(t)
	labels := []string{"coordinator"}
	lines := [][]byte{bytes.Repeat([]byte{markIdle}, width)}
	arrival := t.GetArrivalUnixNanos()
	if tk := t.GetTokenizeNanos(); tk > 0 {
		fill(lines[0], arrival, arrival+tk, markTokenize)
	}
	for _, tok := range t.GetTokens() {
		lines[0][col(tok.GetUnixNanos())] = markToken
	}
	for _, m := range t.GetMigrations() {
		fill(lines[0], m.GetUnixNanos(), m.GetResumedUnixNanos(), markMigration)
	}
	for _, r := range ranks {
		line := bytes.Repeat([]byte{markIdle}, width)
		off := r.GetClockOffsetNanos()
		for _, kv := range r.GetKvTransfers() {
			s := kv.GetStartUnixNanos() + off
			fill(line, s, s+kv.GetDurationNanos(), markKV)
		}
		for _, s := range r.GetSteps() {
			start := s.GetStartUnixNanos() + off
			fill(line, start, start+stepNanos(s), stepMark(s))
		}
		labels = append(labels, rankLabel(r))
		lines = append(lines, line)
	}

	pad := 0
	for _, l := range labels {
		pad = max(pad, len(l))
	}
	var b bytes.Buffer
	span := time.Duration(t1 - t0)
	fmt.Fprintf(&b, "request %s (%s): %.2f ms from arrival to end, 1 column = %.3f ms\n",
		t.GetRequestId(), t.GetModel(), ms(span), ms(span)/float64(width))
	for i, l := range labels {
		fmt.Fprintf(&b, "%-*s |%s|\n", pad, l, lines[i])
	}
	writeScale(&b, pad, width, span)
	fmt.Fprintf(&b, "%c prefill step  %c decode step  %c mixed step  %c KV transfer  %c idle  %c tokenize  %c token received  %c migration\n",
		markPrefill, markDecode, markMixed, markKV, markIdle, markTokenize, markToken, markMigration)
	if m := t.GetMissingRanks(); len(m) > 0 {
		fmt.Fprintf(&b, "missing: %s\n", strings.Join(m, "; "))
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("tracing: write timeline: %w", err)
	}
	return nil
}

// writeScale writes an axis with a tick every 10 columns and, under it,
// the tick times in ms where they fit.
func writeScale(b *bytes.Buffer, pad, width int, span time.Duration) {
	axis := bytes.Repeat([]byte{'-'}, width)
	marks := bytes.Repeat([]byte{' '}, width+16)
	free := 0 // the first column a label may start at
	for c := 0; c < width; c += 10 {
		axis[c] = '+'
		l := fmt.Sprintf("%.3g", ms(span)*float64(c)/float64(width))
		if c >= free && c+len(l) <= len(marks) {
			copy(marks[c:], l)
			free = c + len(l) + 1
		}
	}
	fmt.Fprintf(b, "%-*s |%s|\n", pad, "", axis)
	fmt.Fprintf(b, "%-*s  %s\n", pad, "ms", bytes.TrimRight(marks, " "))
}

// stepMark is a step's timeline character.
func stepMark(s *tandemv1.StepTrace) byte {
	switch stepKind(s) {
	case "prefill":
		return markPrefill
	case "mixed":
		return markMixed
	default:
		return markDecode
	}
}

// stepKind names a step by its rows: "prefill", "decode" or "mixed".
func stepKind(s *tandemv1.StepTrace) string {
	p, d := s.GetPrefillTokens() > 0, s.GetDecodeTokens() > 0
	switch {
	case p && d:
		return "mixed"
	case p:
		return "prefill"
	default:
		return "decode"
	}
}

// timeDomain is the span of a trace in coordinator time: from the arrival
// to the latest of the end, the tokens, the steps and the KV transfers.
// It is never empty, so that callers can divide by it.
func timeDomain(t *tandemv1.RequestTrace) (t0, t1 int64) {
	t0 = t.GetArrivalUnixNanos()
	t1 = max(t0, t.GetEndUnixNanos())
	for _, tok := range t.GetTokens() {
		t1 = max(t1, tok.GetUnixNanos())
	}
	for _, r := range t.GetRanks() {
		off := r.GetClockOffsetNanos()
		for _, s := range r.GetSteps() {
			t1 = max(t1, stepEnd(s)+off)
		}
		for _, kv := range r.GetKvTransfers() {
			t1 = max(t1, kv.GetStartUnixNanos()+kv.GetDurationNanos()+off)
		}
	}
	if t1 <= t0 {
		t1 = t0 + 1
	}
	return t0, t1
}

// orderedRanks returns the trace's ranks, prefill group first, then the
// decode group, then any other, each by rank.
func orderedRanks(t *tandemv1.RequestTrace) []*tandemv1.RankTrace {
	order := func(g string) int {
		switch g {
		case t.GetPrefillGroup():
			return 0
		case t.GetDecodeGroup():
			return 1
		}
		return 2
	}
	rs := slices.Clone(t.GetRanks())
	slices.SortStableFunc(rs, func(a, b *tandemv1.RankTrace) int {
		return cmp.Or(
			cmp.Compare(order(a.GetGroup()), order(b.GetGroup())),
			strings.Compare(a.GetGroup(), b.GetGroup()),
			cmp.Compare(a.GetRank(), b.GetRank()))
	})
	return rs
}

// rankLabel names a rank node/group/rank.
func rankLabel(r *tandemv1.RankTrace) string {
	return label(r.GetNode(), r.GetGroup(), r.GetRank())
}

func label(node, group string, rank int32) string {
	if node == "" {
		node = "?"
	}
	return fmt.Sprintf("%s/%s/%d", node, group, rank)
}

// formatBytes writes a byte count with a binary unit: 512B, 3.1MiB.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, u := float64(n)/unit, 0
	for v >= unit && u < 3 {
		v /= unit
		u++
	}
	return fmt.Sprintf("%.1f%s", v, [...]string{"KiB", "MiB", "GiB", "TiB"}[u])
}
