package chaos

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a run found.
type Report struct {
	// Seed is the run's seed: the same seed replays the same prompts,
	// arrivals and fault schedule (kinds, order and targets).
	Seed uint64 `json:"seed"`
	// Supervision is the groups' restart policy during the run.
	Supervision Supervision `json:"supervision"`
	// Goals are the suite's goals, each met or not, in a fixed order.
	Goals []Goal `json:"goals"`
	// Requests were sent; Completed ended with every token asked for.
	Requests  int `json:"requests"`
	Completed int `json:"completed"`
	// Failed counts the requests that ended with an explicit error, by
	// its code; FailedExcused those of them that failed while the
	// coordinator was down or no healthy group of some role existed, by
	// that excuse; FailedWhileHealthy the others (the goal is 0), with a
	// few of them in FailureSamples.
	Failed             map[string]int `json:"failed"`
	FailedExcused      map[string]int `json:"failed_excused"`
	FailedWhileHealthy int            `json:"failed_while_healthy"`
	FailureSamples     []string       `json:"failure_samples,omitempty"`
	// Hung had no answer by their deadline; Lost ended without their
	// tokens and without an error (or were never answered at all).
	Hung int `json:"hung"`
	Lost int `json:"lost"`
	// Faults is every fault injected, in order, of FaultsScheduled;
	// Recovery the time to recover per kind.
	FaultsScheduled int                    `json:"faults_scheduled"`
	Faults          []FaultRecord          `json:"faults"`
	Recovery        map[Kind]RecoveryStats `json:"recovery"`
	// KVBlocks is every group's KV pool at the end; AllBlocksFree whether
	// every block of every group was free again, nothing running.
	KVBlocks      []GroupBlocks `json:"kv_blocks"`
	AllBlocksFree bool          `json:"all_blocks_free"`
	// DurationSeconds is the load's length; CoordinatorDownSeconds the
	// time the coordinator did not answer, UnservableSeconds the time it
	// answered without a ready group of some role (looks every 100 ms).
	DurationSeconds        float64 `json:"duration_seconds"`
	CoordinatorDownSeconds float64 `json:"coordinator_down_seconds"`
	UnservableSeconds      float64 `json:"unservable_seconds"`
}

// Supervision is a restart policy (worker/supervisor's Options).
type Supervision struct {
	BackoffSeconds         float64 `json:"restart_backoff_seconds"`
	CrashLoopWindowSeconds float64 `json:"crash_loop_window_seconds"`
	CrashLoopLimit         int     `json:"crash_loop_limit"`
}

// Goal is one of the suite's goals and whether the run met it; Detail
// says by how much it missed.
type Goal struct {
	Name   string `json:"name"`
	Met    bool   `json:"met"`
	Detail string `json:"detail,omitempty"`
}

// judge fills Goals: no request hung or lost, none failed while a healthy
// group of each role and the coordinator were there, every KV block free
// at the end, every fault recovered from, every fault scheduled run.
func (r *Report) judge() {
	var notRecovered []string
	for i, f := range r.Faults {
		if !f.Recovered {
			notRecovered = append(notRecovered, fmt.Sprintf("#%d %s %s: %s", i+1, f.Kind, f.Target, f.Error))
		}
	}
	var held []string
	for _, g := range r.KVBlocks {
		switch {
		case !g.Answered:
			held = append(held, g.Group+" (no answer)")
		case g.Free != g.Total || g.Running+g.Waiting > 0:
			held = append(held, fmt.Sprintf("%s %d of %d free, %d running, %d waiting", g.Group, g.Free, g.Total, g.Running, g.Waiting))
		}
	}
	r.Goals = []Goal{
		{Name: "no request hung", Met: r.Hung == 0, Detail: fmt.Sprintf("%d hung", r.Hung)},
		{Name: "no request lost", Met: r.Lost == 0, Detail: fmt.Sprintf("%d lost", r.Lost)},
		{Name: "no request failed while a healthy group of each role and the coordinator were there", Met: r.FailedWhileHealthy == 0,
			Detail: fmt.Sprintf("%d failed so", r.FailedWhileHealthy)},
		{Name: "every KV block free at the end", Met: r.AllBlocksFree, Detail: strings.Join(held, "; ")},
		{Name: "every fault recovered from", Met: len(notRecovered) == 0, Detail: strings.Join(notRecovered, "; ")},
		{Name: "every fault scheduled ran before the load ended", Met: len(r.Faults) >= r.FaultsScheduled,
			Detail: fmt.Sprintf("%d of %d ran", len(r.Faults), r.FaultsScheduled)},
	}
	for i := range r.Goals {
		if r.Goals[i].Met {
			r.Goals[i].Detail = ""
		}
	}
}

// FailedGoals lists the goals the run did not meet, as "name: detail".
func (r *Report) FailedGoals() []string {
	var out []string
	for _, g := range r.Goals {
		if !g.Met {
			out = append(out, g.Name+": "+g.Detail)
		}
	}
	return out
}

// RecoveryStats are the times to recover after one kind of fault.
type RecoveryStats struct {
	N            int     `json:"n"`
	NotRecovered int     `json:"not_recovered"`
	P50Seconds   float64 `json:"p50_seconds"`
	MaxSeconds   float64 `json:"max_seconds"`
}

// GroupBlocks is a group's KV pool as its leader's Stats gave it.
type GroupBlocks struct {
	Group            string `json:"group"`
	Answered         bool   `json:"answered"`
	Free, Total      int
	Running, Waiting int
}

func newReport() *Report {
	return &Report{Failed: map[string]int{}, FailedExcused: map[string]int{}, Recovery: map[Kind]RecoveryStats{}}
}

// summarize fills Recovery from Faults.
func (r *Report) summarize() {
	by := map[Kind][]float64{}
	for _, f := range r.Faults {
		st := r.Recovery[f.Kind]
		st.N++
		if !f.Recovered {
			st.NotRecovered++
		}
		r.Recovery[f.Kind] = st
		if f.Recovered {
			by[f.Kind] = append(by[f.Kind], f.RecoverySeconds)
		}
	}
	for k, ds := range by {
		slices.Sort(ds)
		st := r.Recovery[k]
		st.P50Seconds, st.MaxSeconds = median(ds), ds[len(ds)-1]
		r.Recovery[k] = st
	}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// Print writes the report as tables, the goals last.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "seed %d (replay: make chaos CHAOS_SEED=%d, or go test ./chaos -run '^TestChaos$' -args -chaos.seed %d)\n", r.Seed, r.Seed, r.Seed)
	fmt.Fprintf(w, "supervision: restart backoff %gs, crash-loop window %gs, crash-loop limit %d\n",
		r.Supervision.BackoffSeconds, r.Supervision.CrashLoopWindowSeconds, r.Supervision.CrashLoopLimit)
	failed := 0
	for _, n := range r.Failed {
		failed += n
	}
	fmt.Fprintf(w, "requests: %d sent, %d completed with every token, %d failed with an error, %d hung, %d lost (load %.0f s)\n",
		r.Requests, r.Completed, failed, r.Hung, r.Lost, r.DurationSeconds)
	fmt.Fprintf(w, "  coordinator not answering for %.1f s; answering without a ready group of some role for %.1f s\n",
		r.CoordinatorDownSeconds, r.UnservableSeconds)
	if failed > 0 {
		fmt.Fprintf(w, "  failed by reason: %s\n", counts(r.Failed))
		fmt.Fprintf(w, "  excused: %s; while a healthy group of each role and the coordinator were there: %d\n",
			counts(r.FailedExcused), r.FailedWhileHealthy)
		for _, s := range r.FailureSamples {
			fmt.Fprintf(w, "    %s\n", s)
		}
	}
	fmt.Fprintf(w, "KV blocks at the end: all free: %v\n", r.AllBlocksFree)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  group\tfree\ttotal\trunning\twaiting\t")
	for _, g := range r.KVBlocks {
		if !g.Answered {
			fmt.Fprintf(tw, "  %s\t(no answer)\t\t\t\t\n", g.Group)
			continue
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t\n", g.Group, g.Free, g.Total, g.Running, g.Waiting)
	}
	tw.Flush()
	fmt.Fprintf(w, "faults: %d of %d scheduled; time to recover:\n", len(r.Faults), r.FaultsScheduled)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  kind\tn\tnot recovered\tP50 s\tmax s\t")
	for _, k := range AllKinds() {
		if st, ok := r.Recovery[k]; ok {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%.2f\t%.2f\t\n", k, st.N, st.NotRecovered, st.P50Seconds, st.MaxSeconds)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "goals:")
	for _, g := range r.Goals {
		if g.Met {
			fmt.Fprintf(w, "  met     %s\n", g.Name)
		} else {
			fmt.Fprintf(w, "  MISSED  %s: %s\n", g.Name, g.Detail)
		}
	}
}

// counts writes "A 3, B 1" in key order ("none" when empty).
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// seconds is d in seconds, to the millisecond.
func seconds(d time.Duration) float64 { return d.Round(time.Millisecond).Seconds() }
