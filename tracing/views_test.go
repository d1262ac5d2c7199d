package tracing

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata")

// fixtures are the traces every view is checked on.
var fixtures = []struct {
	name  string
	trace func() *tandemv1.RequestTrace
}{
	{"disaggregated", disaggFixture},
	{"unified", unifiedFixture},
	{"whole loads", wholeLoadFixture},
	{"missing rank", func() *tandemv1.RequestTrace {
		t := disaggFixture()
		t.Ranks = t.Ranks[1:]
		t.MissingRanks = []string{"decode-0/1: unavailable"}
		return t
	}},
}

func TestWriteTableGolden(t *testing.T) {
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteTable(&b, f.trace()); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "table_"+strings.ReplaceAll(f.name, " ", "_")+".golden")
			if *updateGolden {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("WriteTable differs from %s (go test -update rewrites it):\n%s", golden, b.String())
			}
		})
	}
}

func TestWriteTable(t *testing.T) {
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			tr := f.trace()
			var b bytes.Buffer
			if err := WriteTable(&b, tr); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			lines := strings.Split(out, "\n")
			if !strings.HasPrefix(lines[0], "token") {
				t.Fatalf("first line %q is not the header", lines[0])
			}
			for i, tok := range tr.Tokens {
				row := strings.Fields(lines[1+i])
				if len(row) != 10 || row[0] != fmt.Sprint(i) || row[1] != fmt.Sprint(tok.Step) {
					t.Errorf("row %d = %q, want token %d, step %d and 10 columns", i, lines[1+i], i, tok.Step)
				}
			}
			if lines[1+len(tr.Tokens)] != "" {
				t.Errorf("no blank line after the token rows: %q", lines[1+len(tr.Tokens)])
			}
			header := strings.Fields(lines[2+len(tr.Tokens)])
			want := strings.Fields("prompt_len  tokenize ms  TTFT ms  steady ms  tokens  ms/token  tok/s  peak RSS MB")
			if fmt.Sprint(header) != fmt.Sprint(want) {
				t.Errorf("summary header = %q", lines[2+len(tr.Tokens)])
			}
			for _, r := range tr.Ranks {
				if !strings.Contains(out, rankLabel(r)+" ±") {
					t.Errorf("no clock error for %s in\n%s", rankLabel(r), out)
				}
			}
			for _, m := range tr.MissingRanks {
				if !strings.Contains(out, m) {
					t.Errorf("missing rank %q not shown", m)
				}
			}
		})
	}
}

func TestWriteTimeline(t *testing.T) {
	for _, f := range fixtures {
		for _, width := range []int{0, 7, 60, 200} {
			t.Run(fmt.Sprintf("%s/%d", f.name, width), func(t *testing.T) {
				tr := f.trace()
				var b bytes.Buffer
				if err := WriteTimeline(&b, tr, width); err != nil {
					t.Fatal(err)
				}
				out := b.String()
				want := width
				switch {
				case width <= 0:
					want = 100
				case width < 10:
					want = 10
				}
				// A lane is "label |<want columns>|".
				lanes := map[string]string{}
				var axis, scale bool
				for _, l := range strings.Split(out, "\n") {
					i := strings.Index(l, " |")
					if i < 0 || !strings.HasSuffix(l, "|") {
						scale = scale || strings.HasPrefix(l, "ms ") && strings.Fields(l)[1] == "0"
						continue
					}
					body := l[i+2 : len(l)-1]
					if len(body) != want {
						t.Errorf("line %q is %d columns, want %d", l, len(body), want)
					}
					if name := strings.TrimSpace(l[:i]); name != "" {
						lanes[name] = body
					} else {
						axis = strings.HasPrefix(body, "+")
					}
				}
				if !axis || !scale {
					t.Errorf("no scale (axis %v, labels %v):\n%s", axis, scale, out)
				}
				if len(lanes) != len(tr.Ranks)+1 {
					t.Errorf("%d lanes, want coordinator + %d ranks:\n%s", len(lanes), len(tr.Ranks), out)
				}
				if c := lanes["coordinator"]; !strings.Contains(c, "^") {
					t.Errorf("coordinator lane %q shows no token", c)
				}
				for _, r := range tr.Ranks {
					l, ok := lanes[rankLabel(r)]
					if !ok {
						t.Errorf("no lane for %s:\n%s", rankLabel(r), out)
						continue
					}
					if r.Group == tr.DecodeGroup && tr.PrefillGroup != "" && !strings.Contains(l, "~") {
						t.Errorf("decode lane %q shows no KV transfer", l)
					}
					if r.Group == tr.PrefillGroup && !strings.Contains(l, "#") {
						t.Errorf("prefill lane %q shows no prefill step", l)
					}
					if r.Group == tr.DecodeGroup && !strings.Contains(l, "=") {
						t.Errorf("decode lane %q shows no decode step", l)
					}
				}
			})
		}
	}
}

func TestWritePerfetto(t *testing.T) {
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			tr := f.trace()
			var b bytes.Buffer
			if err := WritePerfetto(&b, tr); err != nil {
				t.Fatal(err)
			}
			var doc struct {
				TraceEvents []struct {
					Name string         `json:"name"`
					Ph   string         `json:"ph"`
					Ts   *float64       `json:"ts"`
					Dur  *float64       `json:"dur"`
					Pid  int            `json:"pid"`
					Tid  int            `json:"tid"`
					Args map[string]any `json:"args"`
				} `json:"traceEvents"`
				DisplayTimeUnit string `json:"displayTimeUnit"`
			}
			if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			if doc.DisplayTimeUnit != "ms" {
				t.Errorf("displayTimeUnit = %q", doc.DisplayTimeUnit)
			}
			type thread struct{ pid, tid int }
			processes := map[int]string{}
			threads := map[thread][]string{}
			steps := map[thread]int{}
			var tokens, kv, collectives int
			for _, e := range doc.TraceEvents {
				switch e.Ph {
				case "M":
					switch e.Name {
					case "process_name":
						processes[e.Pid] = e.Args["name"].(string)
					case "thread_name":
						k := thread{e.Pid, e.Tid}
						threads[k] = append(threads[k], e.Args["name"].(string))
					}
				case "X":
					if e.Dur == nil || *e.Dur < 0 || e.Ts == nil {
						t.Errorf("X event %q has ts %v, dur %v", e.Name, e.Ts, e.Dur)
					}
					switch {
					case strings.HasPrefix(e.Name, "kv "):
						kv++
						if strings.Contains(e.Name, "-1") {
							t.Errorf("KV event named %q", e.Name)
						}
					case e.Name == "prefill" || e.Name == "decode" || e.Name == "mixed":
						steps[thread{e.Pid, e.Tid}]++
						// The step's op times, in ms, a quarter and an
						// eighth of its compute time in every fixture.
						q, a := e.Args["op_q_proj_ms"], e.Args["op_attention_ms"]
						if qf, ok := q.(float64); !ok || qf <= 0 || a != 2*qf {
							t.Errorf("step event %v: op_q_proj_ms %v, op_attention_ms %v", e.Args["step"], q, a)
						}
					case e.Name == "allreduce" || e.Name == "broadcast" || e.Name == "allgather":
						collectives++
					}
				case "i":
					tokens++
				default:
					t.Errorf("event %q has phase %q", e.Name, e.Ph)
				}
			}
			if tokens != len(tr.Tokens) {
				t.Errorf("%d token instants, want %d", tokens, len(tr.Tokens))
			}
			// Each rank: its node's process, exactly one thread named after
			// it, holding its steps.
			var wantKV, wantCollectives int
			for _, r := range tr.Ranks {
				name := fmt.Sprintf("%s/rank %d (%s)", r.Group, r.Rank, r.Role.Name())
				var found []thread
				for k, names := range threads {
					if len(names) != 1 {
						t.Errorf("thread %v named %d times: %q", k, len(names), names)
					}
					if names[0] == name {
						found = append(found, k)
					}
				}
				if len(found) != 1 {
					t.Errorf("%d threads named %q, want 1", len(found), name)
					continue
				}
				if processes[found[0].pid] != r.Node {
					t.Errorf("rank %s in process %q, want %q", name, processes[found[0].pid], r.Node)
				}
				if steps[found[0]] != len(r.Steps) {
					t.Errorf("rank %s has %d step events, want %d", name, steps[found[0]], len(r.Steps))
				}
				wantKV += len(r.KvTransfers)
				for _, s := range r.Steps {
					wantCollectives += len(s.Collectives)
				}
			}
			if kv != wantKV || collectives != wantCollectives {
				t.Errorf("%d KV and %d collective events, want %d and %d", kv, collectives, wantKV, wantCollectives)
			}
			if processes[coordinatorPid] != "coordinator" {
				t.Errorf("process %d is %q, want the coordinator", coordinatorPid, processes[coordinatorPid])
			}
		})
	}
}

type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestViewsWriteErrors(t *testing.T) {
	tr := disaggFixture()
	for name, write := range map[string]func() error{
		"table":    func() error { return WriteTable(brokenWriter{}, tr) },
		"timeline": func() error { return WriteTimeline(brokenWriter{}, tr, 80) },
		"perfetto": func() error { return WritePerfetto(brokenWriter{}, tr) },
	} {
		if err := write(); err == nil || !strings.Contains(err.Error(), "broken pipe") {
			t.Errorf("%s: error %v, want the writer's wrapped", name, err)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 512: "512B", 1024: "1.0KiB", 3250586: "3.1MiB", 5 << 30: "5.0GiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestViewsShowMigrations: a request that moved to other groups shows
// each move in the table, the timeline and the Perfetto export.
func TestViewsShowMigrations(t *testing.T) {
	tr := disaggFixture()
	tr.Migrations = []*tandemv1.Migration{{
		UnixNanos: tr.ArrivalUnixNanos + 6_000_000, ResumedUnixNanos: tr.ArrivalUnixNanos + 7_500_000,
		Reason: "unavailable", FromGroup: "decode-1", ErrorMessage: "group is down", TokensBefore: 3,
		PrefillGroup: "prefill-0", DecodeGroup: "decode-0", WorkerRequestId: tr.RequestId + "#migration1",
	}}
	want := "migration 1 at 6.00 ms: decode-1 failed the request after 3 tokens (unavailable: group is down); resumed on prefill-0 > decode-0 after 1.50 ms as " + tr.RequestId + "#migration1"
	var table, timeline, perfetto, svg bytes.Buffer
	if err := WriteSVG(&svg, tr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(svg.String(), `class="migration"`) || !strings.Contains(svg.String(), "decode-1 failed the request after 3 tokens") {
		t.Errorf("SVG has no migration:\n%s", svg.String())
	}
	if err := WriteTable(&table, tr); err != nil {
		t.Fatal(err)
	}
	if err := WriteTimeline(&timeline, tr, 100); err != nil {
		t.Fatal(err)
	}
	if err := WritePerfetto(&perfetto, tr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, table.String())
	}
	coordLine := strings.SplitN(timeline.String(), "\n", 3)[1]
	if !strings.HasPrefix(coordLine, "coordinator") || !strings.Contains(coordLine, "M") {
		t.Errorf("coordinator line %q has no migration mark", coordLine)
	}
	var doc struct {
		TraceEvents []struct {
			Name string
			Dur  float64
			Args map[string]any
		}
	}
	if err := json.Unmarshal(perfetto.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range doc.TraceEvents {
		if e.Name == "migration 1" {
			found = e.Dur == 1500 && e.Args["from_group"] == "decode-1" && e.Args["reason"] == "unavailable"
		}
	}
	if !found {
		t.Errorf("Perfetto export has no 1.5 ms migration event from decode-1:\n%s", perfetto.String())
	}
}
