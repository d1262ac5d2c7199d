package tracing

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// svgElem is a parsed SVG element, enough to query classes, attributes
// and children.
type svgElem struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Children []svgElem  `xml:",any"`
	Text     string     `xml:",chardata"`
}

func (e *svgElem) attr(name string) string {
	for _, a := range e.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// walk calls f on e and every descendant, parents first.
func (e *svgElem) walk(f func(*svgElem)) {
	f(e)
	for i := range e.Children {
		e.Children[i].walk(f)
	}
}

// all returns the descendants named name with class class.
func (e *svgElem) all(name, class string) []*svgElem {
	var out []*svgElem
	e.walk(func(c *svgElem) {
		if c.XMLName.Local == name && c.attr("class") == class {
			out = append(out, c)
		}
	})
	return out
}

// parseSVG checks that b is one well-formed XML document (every token
// decodes, nothing trails the root) and returns its tree.
func parseSVG(t *testing.T, b []byte) *svgElem {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	depth, roots := 0, 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("svg is not well-formed XML: %v\n%s", err, b)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
			}
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && len(bytes.TrimSpace(tok)) > 0 {
				t.Fatalf("text outside the root element: %q", tok)
			}
		}
	}
	if roots != 1 {
		t.Fatalf("svg has %d root elements, want 1", roots)
	}
	var root svgElem
	if err := xml.Unmarshal(b, &root); err != nil {
		t.Fatalf("unmarshal svg: %v", err)
	}
	if root.XMLName.Local != "svg" || root.XMLName.Space != "http://www.w3.org/2000/svg" {
		t.Fatalf("root element is %v, want svg in the SVG namespace", root.XMLName)
	}
	return &root
}

// svgFixtureRank builds a rank with n steps starting at base (rank clock),
// each with two allreduces, and kv KV transfers.
func svgFixtureRank(node, group string, role tandemv1.Role, rank int32, offset, base int64, n, kv int) *tandemv1.RankTrace {
	r := &tandemv1.RankTrace{
		Node: node, Group: group, Role: role, Rank: rank,
		Addr:             fmt.Sprintf("%s:%d", node, 7000+rank),
		ClockOffsetNanos: offset, ClockErrorNanos: 12_500,
	}
	for i := range n {
		s := &tandemv1.StepTrace{
			Step:           uint64(100 + i),
			StartUnixNanos: base + int64(i)*4_000_000 - offset,
			ScheduleNanos:  50_000, ComputeNanos: 3_000_000, SampleNanos: 100_000, QueueNanos: 20_000,
			FreeBlocks: 900,
			Collectives: []*tandemv1.CollectiveTrace{
				{Kind: "allreduce", Bytes: 64 << 10, DurationNanos: 200_000, OffsetNanos: 500_000},
				{Kind: "allreduce", Bytes: 64 << 10, DurationNanos: 150_000, OffsetNanos: 2_000_000},
			},
		}
		if role == tandemv1.Role_ROLE_PREFILL {
			s.PrefillTokens = 128
		} else {
			s.DecodeTokens = 1
		}
		if rank == 0 {
			s.Seqs = []*tandemv1.StepSeq{{RequestId: "req-<1>", Tokens: s.PrefillTokens + s.DecodeTokens, Prefill: role == tandemv1.Role_ROLE_PREFILL, Sampled: true}}
			s.Gpu = &tandemv1.GPUCounters{UtilizationPercent: 87, MemoryUsedBytes: 3 << 30, PowerWatts: 410, SmClockMhz: 1980}
			s.Ops = []*tandemv1.OpTime{{Op: "q_proj", Nanos: 380_000}, {Op: "attention", Nanos: 750_000}}
		}
		r.Steps = append(r.Steps, s)
	}
	for l := range kv {
		r.KvTransfers = append(r.KvTransfers, &tandemv1.KVTransferTrace{
			Layer: int32(l), SourceRank: rank, DestRank: rank, Bytes: 2 << 20,
			StartUnixNanos: base + 3_200_000 + int64(l)*300_000 - offset, DurationNanos: 250_000,
		})
	}
	return r
}

func svgFixtureTrace() *tandemv1.RequestTrace {
	const arrival = 1_700_000_000_000_000_000
	t := &tandemv1.RequestTrace{
		RequestId: `req-<1> & "quoted"`, Model: "tiny", ArrivalUnixNanos: arrival,
		TokenizeNanos: 300_000, PromptTokens: 128, FinishReason: tandemv1.FinishReason_FINISH_REASON_LENGTH,
		EndUnixNanos: arrival + 30_000_000, PrefillGroup: "prefill-0", DecodeGroup: "decode-0",
		MissingRanks: []string{"decode-0/2: <unreachable>"},
	}
	t.Ranks = []*tandemv1.RankTrace{
		// Out of display order on purpose: decode first, ranks reversed.
		svgFixtureRank("node-b", "decode-0", tandemv1.Role_ROLE_DECODE, 1, -2_000_000, arrival+5_000_000, 6, 4),
		svgFixtureRank("node-b", "decode-0", tandemv1.Role_ROLE_DECODE, 0, -2_000_000, arrival+5_000_000, 6, 4),
		svgFixtureRank("node-a", "prefill-0", tandemv1.Role_ROLE_PREFILL, 1, 1_500_000, arrival+1_000_000, 1, 4),
		svgFixtureRank("node-a", "prefill-0", tandemv1.Role_ROLE_PREFILL, 0, 1_500_000, arrival+1_000_000, 1, 4),
	}
	for i := range 7 {
		t.Tokens = append(t.Tokens, &tandemv1.TokenTrace{
			Index: int32(i), TokenId: int32(1000 + i), UnixNanos: arrival + 4_500_000 + int64(i)*4_000_000,
			Group: "decode-0", Step: uint64(100 + i),
		})
	}
	return t
}

func TestWriteSVG(t *testing.T) {
	full := svgFixtureTrace()
	spanning := svgFixtureTrace()
	spanning.Ranks[0].Node = "node-a" // decode-0 across both nodes
	running := svgFixtureTrace()
	running.EndUnixNanos = 0
	running.FinishReason = tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED
	mixed := svgFixtureTrace()
	mixed.Ranks[0].Steps[0].PrefillTokens = 16
	tests := []struct {
		name  string
		trace *tandemv1.RequestTrace
		nodes int
		want  []string // substrings of the output
	}{
		{"two nodes", full, 2, []string{
			"node-a · prefill-0/rank 0 (prefill)", "node-b · decode-0/rank 1 (decode)",
			"clock +1.500 ms ± 12.5 µs", "clock -2.000 ms ± 12.5 µs", "req-&lt;1&gt; &amp; &#34;quoted&#34;", "missing rank: decode-0/2: &lt;unreachable&gt;",
			"ms since arrival", ">0<", ">10<", ">20<", ">30<",
		}},
		{"group across nodes", spanning, 2, []string{"node-a · decode-0/rank 1 (decode)"}},
		{"running", running, 2, []string{"token 6 · id 1006"}},
		{"mixed step", mixed, 2, []string{`data-kind="mixed"`, "tokens: 16 prefill, 1 decode"}},
		{"no ranks", &tandemv1.RequestTrace{RequestId: "empty", ArrivalUnixNanos: 1e18}, 0, []string{"request empty"}},
		{"zero trace", &tandemv1.RequestTrace{}, 0, nil},
		{"nil trace", nil, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteSVG(&b, tt.trace); err != nil {
				t.Fatalf("WriteSVG: %v", err)
			}
			root := parseSVG(t, b.Bytes())

			lanes := root.all("g", "lane")
			if got, want := len(lanes), len(tt.trace.GetRanks()); got != want {
				t.Errorf("%d lanes, want one per rank (%d)", got, want)
			}
			seen := map[string]bool{}
			for _, l := range lanes {
				seen[l.attr("data-node")+" "+l.attr("data-group")+"/"+l.attr("data-rank")] = true
			}
			wantSteps := 0
			for _, r := range tt.trace.GetRanks() {
				if key := fmt.Sprintf("%s %s/%d", r.GetNode(), r.GetGroup(), r.GetRank()); !seen[key] {
					t.Errorf("no lane with data-node/group/rank %q", key)
				}
				wantSteps += len(r.GetSteps())
			}
			if got := len(root.all("g", "node")); got != tt.nodes {
				t.Errorf("%d node groups, want %d", got, tt.nodes)
			}
			steps := root.all("rect", "step")
			if len(steps) != wantSteps {
				t.Errorf("%d step rects, want one per step (%d)", len(steps), wantSteps)
			}
			for _, s := range steps {
				if s.attr("data-step") == "" {
					t.Errorf("step rect without data-step: %+v", s.Attrs)
				}
			}
			if got, want := len(root.all("rect", "token")), len(tt.trace.GetTokens()); got != want {
				t.Errorf("%d token ticks, want %d", got, want)
			}
			// Every rect has a non-empty title so that hovering explains it.
			rects := 0
			root.walk(func(e *svgElem) {
				if e.XMLName.Local != "rect" {
					return
				}
				rects++
				if len(e.Children) == 0 || e.Children[0].XMLName.Local != "title" || strings.TrimSpace(e.Children[0].Text) == "" {
					t.Errorf("rect class=%q data-step=%q has no title", e.attr("class"), e.attr("data-step"))
				}
			})
			if rects == 0 {
				t.Error("no rects at all")
			}
			for _, s := range tt.want {
				if !strings.Contains(b.String(), s) {
					t.Errorf("output lacks %q", s)
				}
			}

			var again bytes.Buffer
			if err := WriteSVG(&again, tt.trace); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.Bytes(), again.Bytes()) {
				t.Error("two renderings of the same trace differ")
			}
		})
	}
}

// TestWriteSVGStepDetails checks the numbers in a step's title and its
// placement in the coordinator clock.
func TestWriteSVGStepDetails(t *testing.T) {
	tr := svgFixtureTrace()
	var b bytes.Buffer
	if err := WriteSVG(&b, tr); err != nil {
		t.Fatal(err)
	}
	root := parseSVG(t, b.Bytes())
	var prefill *svgElem
	for _, l := range root.all("g", "lane") {
		if l.attr("data-group") == "prefill-0" && l.attr("data-rank") == "0" {
			prefill = l
		}
	}
	if prefill == nil {
		t.Fatal("no lane for prefill-0/0")
	}
	steps := prefill.all("rect", "step")
	if len(steps) != 1 {
		t.Fatalf("prefill-0/0 has %d step rects, want 1", len(steps))
	}
	title := steps[0].Children[0].Text
	for _, want := range []string{
		"step 100 · prefill", "tokens: 128 prefill, 0 decode",
		"start +1.00 ms", // offset applied: rank time + 1.5 ms = arrival + 1 ms
		"queue 0.02 ms · schedule 0.05 ms · compute 3.00 ms · sample 0.10 ms",
		"collectives: 2 · 128.0 KiB · 0.35 ms", "GPU 87%",
		"ops: q_proj 0.38 ms · attention 0.75 ms",
	} {
		if !strings.Contains(title, want) {
			t.Errorf("step title lacks %q:\n%s", want, title)
		}
	}
	if got := len(prefill.all("rect", "collective")); got != 2 {
		t.Errorf("%d collective rects, want 2", got)
	}
	if got := len(prefill.all("rect", "kv")); got != 4 {
		t.Errorf("%d kv rects, want 4", got)
	}
	// 30 ms over the plot's width: the step starts 1 ms in.
	wantX := svgNum(svgPlotLeft + svgPlotWidth/30.0)
	if got := steps[0].attr("x"); got != wantX {
		t.Errorf("step x = %s, want %s", got, wantX)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteSVGWriteError(t *testing.T) {
	err := WriteSVG(failWriter{}, svgFixtureTrace())
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("WriteSVG to a failing writer = %v, want the write error", err)
	}
}

func TestSVGNiceStep(t *testing.T) {
	tests := []struct{ raw, want float64 }{
		{0.013, 0.02}, {0.1, 0.1}, {0.7, 1}, {1, 1}, {1.2, 2}, {3, 5}, {37.5, 50}, {0, 1}, {-1, 1},
	}
	for _, tt := range tests {
		if got := svgNiceStep(tt.raw); got != tt.want {
			t.Errorf("svgNiceStep(%v) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}
