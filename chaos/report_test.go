package chaos

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/dataset"
)

// Each request lands in exactly one class, and a failure is excused only
// by what the monitor saw (or a coordinator kill) while it ran.
func TestClassify(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// The coordinator answers and serves, is down 1000-1200 ms, serves
	// without a ready decode group 2000-2300 ms.
	m := &monitor{}
	for ms := 0; ms <= 3000; ms += 100 {
		up := ms < 1000 || ms >= 1200
		m.log = append(m.log, sample{at: at(ms), up: up, servable: up && (ms < 2000 || ms >= 2300)})
	}
	type req struct {
		out        bench.Output
		start, end int // ms
		hung, sent bool
	}
	ok := bench.Output{Success: true, OutputTokens: 4}
	unavailable := bench.Output{Code: "UNAVAILABLE", Error: "group left"}
	reqs := []req{
		{ok, 0, 500, false, true}, // completed
		{bench.Output{Success: true, OutputTokens: 3}, 0, 500, false, true}, // short without an error: lost
		{bench.Output{Code: noOutput}, 0, 500, false, true},                 // no token, no error: lost
		{bench.Output{Code: "DEADLINE_EXCEEDED"}, 0, 60000, true, true},     // hung
		{unavailable, 900, 1100, false, true},                               // coordinator down under it
		{unavailable, 1150, 1160, false, true},                              // between two looks, both down
		{unavailable, 2100, 2150, false, true},                              // no ready group at its end
		{unavailable, 2500, 2600, false, true},                              // all was well: counts against the goal
		{unavailable, 400, 450, false, true},                                // a coordinator kill at 420 ms
		{unavailable, 440, 460, false, true},                                // began after the kill, before any look saw it
		{ok, 0, 0, false, false},                                            // never sent
	}
	run := &bench.Run{Options: bench.Options{IDPrefix: "r"}}
	target := newRecordingTarget(nil, time.Minute)
	for i, q := range reqs {
		run.Workload = append(run.Workload, dataset.Request{OutputLen: 4})
		q.out.RequestID = "r" + strconv.Itoa(i)
		run.Outputs = append(run.Outputs, q.out)
		if q.sent {
			target.outcomes["r"+strconv.Itoa(i)] = outcome{start: at(q.start), end: at(q.end), hung: q.hung}
		}
	}
	r := newReport()
	// The kill at 420 ms was recovered from 50 ms later.
	r.Faults = []FaultRecord{{Kind: KillCoordinator, At: at(420), Recovered: true, RecoverySeconds: 0.05}}
	classify(r, run, target, m)
	if r.Requests != 11 || r.Completed != 1 || r.Lost != 3 || r.Hung != 1 || r.Failed["UNAVAILABLE"] != 6 || r.Failed["DEADLINE_EXCEEDED"] != 0 {
		t.Fatalf("classes: %+v", r)
	}
	if r.FailedExcused[excuseCoordinator] != 4 || r.FailedExcused[excuseNoGroup] != 1 || r.FailedWhileHealthy != 1 ||
		len(r.FailureSamples) != 1 || !strings.HasPrefix(r.FailureSamples[0], "r7: ") {
		t.Fatalf("excuses: %+v, samples %q", r.FailedExcused, r.FailureSamples)
	}
	down, unservable := m.outages()
	if down != 200*time.Millisecond || unservable != 300*time.Millisecond {
		t.Fatalf("outages: down %v, unservable %v", down, unservable)
	}
}

// Recovery times are summarized per kind: P50 and max over the faults
// recovered from, the others counted.
func TestSummarize(t *testing.T) {
	r := newReport()
	r.Faults = []FaultRecord{
		{Kind: KillRank, RecoverySeconds: 3, Recovered: true},
		{Kind: KillRank, RecoverySeconds: 1, Recovered: true},
		{Kind: KillRank, RecoverySeconds: 2, Recovered: true},
		{Kind: KillRank, RecoverySeconds: 120, Recovered: false},
		{Kind: KVDrop, RecoverySeconds: 0.5, Recovered: true},
		{Kind: KVDrop, RecoverySeconds: 1.5, Recovered: true},
	}
	r.summarize()
	if got := r.Recovery[KillRank]; got != (RecoveryStats{N: 4, NotRecovered: 1, P50Seconds: 2, MaxSeconds: 3}) {
		t.Errorf("kill-rank: %+v", got)
	}
	if got := r.Recovery[KVDrop]; got != (RecoveryStats{N: 2, P50Seconds: 1, MaxSeconds: 1.5}) {
		t.Errorf("kv-drop: %+v", got)
	}
	var out strings.Builder
	r.Print(&out)
	if !strings.Contains(out.String(), "kill-rank") || !strings.Contains(out.String(), "faults: 6") {
		t.Errorf("report:\n%s", out.String())
	}
}

// A run that misses several goals names every one of them, with how it
// missed, and one that meets them all names none.
func TestJudgeListsEveryMissedGoal(t *testing.T) {
	r := newReport()
	r.FaultsScheduled = 3
	r.Hung, r.Lost, r.FailedWhileHealthy = 1, 2, 0
	r.Faults = []FaultRecord{{Kind: KillRank, Target: "decode-0/1", Recovered: true}, {Kind: PauseRank, Target: "prefill-1/0", Error: "group not ready after 2m"}}
	r.KVBlocks = []GroupBlocks{{Group: "decode-0", Answered: true, Free: 10, Total: 12, Running: 1}, {Group: "decode-1"}}
	r.judge()
	want := []string{
		"no request hung: 1 hung",
		"no request lost: 2 lost",
		"every KV block free at the end: decode-0 10 of 12 free, 1 running, 0 waiting; decode-1 (no answer)",
		"every fault recovered from: #2 pause-rank prefill-1/0: group not ready after 2m",
		"every fault scheduled ran before the load ended: 2 of 3 ran",
	}
	if got := r.FailedGoals(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("missed goals:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var out strings.Builder
	r.Print(&out)
	for _, w := range want {
		if !strings.Contains(out.String(), "MISSED  "+w) {
			t.Errorf("the printed report lacks %q:\n%s", w, out.String())
		}
	}

	ok := newReport()
	ok.AllBlocksFree = true
	ok.judge()
	if got := ok.FailedGoals(); len(got) != 0 || len(ok.Goals) != 6 {
		t.Fatalf("a run meeting every goal: missed %v of %d goals", got, len(ok.Goals))
	}
}
