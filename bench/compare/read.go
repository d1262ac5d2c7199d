package compare

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/plot"
	"github.com/tandemllm/tandem/bench/serve"
)

// UnmarshalJSON reads null as NaN, as MarshalJSON writes it.
func (n *Num) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*n = Num(math.NaN())
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*n = Num(f)
	return nil
}

// ReadReport reads a report JSON that bench compare saved: this
// version's, or an earlier one's, whose workload has Go's field names
// (NumPrompts) where vLLM's flag names (num_prompts) belong and whose
// configurations do not name their KV cache dtype (resolved here from
// their tandem up flags and model, as Run does).
func ReadReport(path string) (*Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if w, ok := raw["workload"]; ok {
		if raw["workload"], err = vllmKeys(w, reflect.TypeFor[serve.Workload]()); err != nil {
			return nil, fmt.Errorf("%s: workload: %w", path, err)
		}
	}
	if data, err = json.Marshal(raw); err != nil {
		return nil, err
	}
	var rep Report
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i, cf := range rep.Configurations {
		if cf.KVCacheDType != "" {
			continue
		}
		rep.Configurations[i].KVCacheDType = UnknownDType
		if m, err := serve.ResolveModel(cf.Model, ""); err == nil && cf.local() {
			rep.Configurations[i].KVCacheDType = cacheDType(cf.UpArgs, m.Config)
		}
	}
	if !rep.Partial && rep.CompleteRounds == 0 {
		rep.CompleteRounds = rep.Rounds
	}
	if rep.Baseline == "" && len(rep.Points) > 0 && len(rep.Points[0].Differences) > 0 {
		rep.Baseline = rep.Points[0].Differences[0].Baseline
	}
	return &rep, nil
}

// vllmKeys renames the keys of the JSON object w that are Go field
// names of t to their json tags.
func vllmKeys(w json.RawMessage, t reflect.Type) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(w, &m); err != nil {
		return nil, err
	}
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if v, ok := m[f.Name]; ok && tag != "" && tag != f.Name {
			delete(m, f.Name)
			if _, dup := m[tag]; !dup {
				m[tag] = v
			}
		}
	}
	return json.Marshal(m)
}

// Redraw draws, into dir, the charts a saved report holds the figures
// for without its per-request arrays: throughput against P99 latency
// across the load points (from each result's p99_*_ms and
// output_throughput) and the cost split.
func (r *Report) Redraw(dir string) ([]string, error) {
	var panels []plot.Panel
	for _, m := range []string{bench.TTFT, bench.TPOT, bench.E2EL} {
		title := map[string]string{bench.TTFT: "TTFT", bench.TPOT: "TPOT", bench.E2EL: "E2E latency"}[m]
		p := plot.Panel{Title: "Throughput vs P99 " + title, XLabel: "P99 " + title + " (ms)", YLabel: "output tokens/s"}
		for _, cf := range r.Configurations {
			line := plot.Series{Label: cf.Name}
			for _, pt := range r.Points {
				for _, c := range pt.Configs {
					var keys map[string]any
					if c.Name != cf.Name || json.Unmarshal(c.Result, &keys) != nil {
						continue
					}
					x, okx := keys["p99_"+m+"_ms"].(float64)
					y, oky := keys["output_throughput"].(float64)
					if okx && oky {
						line.X, line.Values = append(line.X, x), append(line.Values, y)
					}
				}
			}
			p.Series = append(p.Series, line)
		}
		panels = append(panels, p)
	}
	pf, err := plot.Curves(dir, "throughput_vs_p99", panels)
	if err != nil {
		return nil, err
	}
	sf, err := plot.Stacks(dir, "cost_split", r.costStacks())
	if err != nil {
		return []string{pf.PNG, pf.SVG}, err
	}
	return []string{pf.PNG, pf.SVG, sf.PNG, sf.SVG}, nil
}

// Resave reads the report at path (ReadReport), writes it in this
// version's keys to c's result file and, with c.Plot, draws the charts
// its figures allow (Redraw).
func Resave(c Config, path string, stderr io.Writer) (*Report, error) {
	rep, err := ReadReport(path)
	if err != nil {
		return nil, usage("--report: %v", err)
	}
	name := c.ResultFilename
	if name == "" {
		name = filepath.Base(path)
	}
	out, err := serve.WriteJSON(filepath.Join(c.ResultDir, name), rep)
	if err != nil {
		return rep, err
	}
	fmt.Fprintf(stderr, "saved %s\n", out)
	if c.Plot != "" {
		files, err := rep.Redraw(c.Plot)
		if err != nil {
			return rep, err
		}
		fmt.Fprintf(stderr, "plots: %s\n", strings.Join(files, " "))
	}
	return rep, nil
}
