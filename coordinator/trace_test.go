package coordinator

import (
	"fmt"
	"slices"
	"testing"
	"time"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

func TestHistoryKeepsTheMostRecent(t *testing.T) {
	h := newHistory(3)
	for i := range 5 {
		h.add(&traceRecord{id: fmt.Sprint("r", i)})
	}
	h.add(&traceRecord{id: "r2"}) // again: it moves to the newest
	var got []string
	for _, r := range h.recent(10) {
		got = append(got, r.id)
	}
	if want := []string{"r2", "r4", "r3"}; !slices.Equal(got, want) {
		t.Fatalf("recent %v, want %v", got, want)
	}
	for id, want := range map[string]bool{"r0": false, "r1": false, "r2": true, "r3": true, "r4": true} {
		if (h.get(id) != nil) != want {
			t.Errorf("get(%s) present = %v, want %v", id, !want, want)
		}
	}
	if n := len(h.recent(2)); n != 2 {
		t.Errorf("recent(2) gave %d", n)
	}
}

func TestTraceRecordSummary(t *testing.T) {
	arrival := time.Unix(100, 0)
	r := &traceRecord{id: "x", arrival: arrival, prompt: 7, prefill: "p", decode: "d"}
	for i, ms := range []int{10, 14, 18, 22} {
		r.token(int32(i), arrival.Add(time.Duration(ms)*time.Millisecond), "d", uint64(i+1))
	}
	r.close(tandemv1.FinishReason_FINISH_REASON_LENGTH)
	r.close(tandemv1.FinishReason_FINISH_REASON_ERROR) // the first end wins
	s := r.summary()
	if s.GetTtftMs() != 10 || s.GetTpotMs() != 4 || s.GetCompletionTokens() != 4 || s.GetPromptTokens() != 7 ||
		s.GetFinishReason() != tandemv1.FinishReason_FINISH_REASON_LENGTH || !slices.Equal(s.GetGroups(), []string{"p", "d"}) {
		t.Fatalf("summary %v", s)
	}
	snap := r.snapshot()
	if len(snap.GetTokens()) != 4 || snap.GetTokens()[3].GetStep() != 4 || snap.GetEndUnixNanos() == 0 {
		t.Fatalf("snapshot %v", snap)
	}
}
