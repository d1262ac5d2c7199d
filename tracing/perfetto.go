package tracing

import (
	"encoding/json"
	"fmt"
	"io"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// traceEvent is one event of the Chrome trace event format, which
// ui.perfetto.dev and chrome://tracing open.
type traceEvent struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat,omitempty"`
	Ph   string         `json:"ph"`
	Ts   float64        `json:"ts"`            // µs after the arrival
	Dur  *float64       `json:"dur,omitempty"` // µs; complete ("X") events only
	Pid  int            `json:"pid"`
	Tid  int            `json:"tid"`
	S    string         `json:"s,omitempty"` // an instant event's scope
	Args map[string]any `json:"args,omitempty"`
}

// chromeTrace is the object form of the format.
type chromeTrace struct {
	TraceEvents     []traceEvent   `json:"traceEvents"`
	DisplayTimeUnit string         `json:"displayTimeUnit"`
	OtherData       map[string]any `json:"otherData,omitempty"`
}

// The coordinator's process and thread.
const (
	coordinatorPid = 1
	coordinatorTid = 1
)

// WritePerfetto writes the trace as Chrome trace event JSON: the
// coordinator as a process (the request, tokenizing, an instant per token
// received, a span per migration to other groups), one process per node, one thread per rank with its steps
// (collectives nested in them), and one thread per rank and KV peer with
// its KV transfers, which overlap the rank's steps and so cannot share
// its thread. Times are coordinator time in µs after the arrival.
func WritePerfetto(w io.Writer, t *tandemv1.RequestTrace) error {
	p := &perfetto{arrival: t.GetArrivalUnixNanos(), pids: map[string]int{}, nextTid: coordinatorTid + 1}
	p.coordinator(t)
	for _, r := range orderedRanks(t) {
		p.rank(r)
	}
	out := chromeTrace{
		TraceEvents:     p.ev,
		DisplayTimeUnit: "ms",
		OtherData: map[string]any{
			"request_id": t.GetRequestId(), "model": t.GetModel(), "arrival_unix_nanos": p.arrival,
			"prefill_group": t.GetPrefillGroup(), "decode_group": t.GetDecodeGroup(),
		},
	}
	if m := t.GetMissingRanks(); len(m) > 0 {
		out.OtherData["missing_ranks"] = m
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("tracing: write perfetto trace: %w", err)
	}
	return nil
}

// perfetto collects a trace's events: processes by node, threads
// numbered in the order they appear.
type perfetto struct {
	arrival int64 // ns; event times are µs after it
	ev      []traceEvent
	pids    map[string]int // by node
	nextTid int
}

func (p *perfetto) ts(ns int64) float64 { return float64(ns-p.arrival) / 1e3 }

// complete is a span ("X") from and to unix ns.
func (p *perfetto) complete(name, cat string, pid, tid int, from, to int64, args map[string]any) traceEvent {
	d := float64(max(0, to-from)) / 1e3
	return traceEvent{Name: name, Cat: cat, Ph: "X", Ts: p.ts(from), Dur: &d, Pid: pid, Tid: tid, Args: args}
}

func meta(name string, pid, tid int, args map[string]any) traceEvent {
	return traceEvent{Name: name, Ph: "M", Pid: pid, Tid: tid, Args: args}
}

// thread names a new thread of pid, sorted in the order of creation.
func (p *perfetto) thread(pid int, name string) int {
	tid := p.nextTid
	p.nextTid++
	p.ev = append(p.ev,
		meta("thread_name", pid, tid, map[string]any{"name": name}),
		meta("thread_sort_index", pid, tid, map[string]any{"sort_index": tid}))
	return tid
}

// coordinator adds the coordinator's process: the request, tokenizing,
// each migration and an instant per token received with its cost.
func (p *perfetto) coordinator(t *tandemv1.RequestTrace) {
	arrival := p.arrival
	p.ev = append(p.ev,
		meta("process_name", coordinatorPid, 0, map[string]any{"name": "coordinator"}),
		meta("process_sort_index", coordinatorPid, 0, map[string]any{"sort_index": 0}),
		meta("thread_name", coordinatorPid, coordinatorTid, map[string]any{"name": "request " + t.GetRequestId()}),
		p.complete("request", "request", coordinatorPid, coordinatorTid, arrival, max(arrival, t.GetEndUnixNanos()), map[string]any{
			"request_id": t.GetRequestId(), "model": t.GetModel(), "prompt_tokens": t.GetPromptTokens(),
			"tokens": len(t.GetTokens()), "finish_reason": t.GetFinishReason().String(),
		}),
		p.complete("tokenize", "coordinator", coordinatorPid, coordinatorTid, arrival, arrival+t.GetTokenizeNanos(), nil),
	)
	for i, m := range t.GetMigrations() {
		p.ev = append(p.ev, p.complete(fmt.Sprintf("migration %d", i+1), "migration", coordinatorPid, coordinatorTid, m.GetUnixNanos(), m.GetResumedUnixNanos(), map[string]any{
			"reason": m.GetReason(), "from_group": m.GetFromGroup(), "error": m.GetErrorMessage(), "tokens_before": m.GetTokensBefore(),
			"prefill_group": m.GetPrefillGroup(), "decode_group": m.GetDecodeGroup(), "worker_request_id": m.GetWorkerRequestId(),
		}))
	}
	for i, c := range Breakdown(t) { // one cost per token, in order
		tok := t.GetTokens()[i]
		p.ev = append(p.ev, traceEvent{
			Name: fmt.Sprintf("token %d", c.Index), Cat: "token", Ph: "i", S: "t",
			Ts: p.ts(tok.GetUnixNanos()), Pid: coordinatorPid, Tid: coordinatorTid,
			Args: map[string]any{
				"token_id": tok.GetTokenId(), "group": c.Group, "step": c.Step,
				"itl_ms": ms(c.ITL), "queue_ms": ms(c.Queue), "compute_ms": ms(c.Compute),
				"allreduce_ms": ms(c.Allreduce), "kv_ms": ms(c.KVTransfer), "sampling_ms": ms(c.Sampling),
				"other_ms": ms(c.Other), "error_bound_ms": ms(c.ErrorBound),
			},
		})
	}
}

// rank adds a rank's thread of steps to its node's process (made at its
// node's first rank), and its KV transfers.
func (p *perfetto) rank(r *tandemv1.RankTrace) {
	node := r.GetNode()
	pid, ok := p.pids[node]
	if !ok {
		pid = coordinatorPid + 1 + len(p.pids)
		p.pids[node] = pid
		p.ev = append(p.ev,
			meta("process_name", pid, 0, map[string]any{"name": node}),
			meta("process_sort_index", pid, 0, map[string]any{"sort_index": pid}))
	}
	tid := p.thread(pid, fmt.Sprintf("%s/rank %d (%s)", r.GetGroup(), r.GetRank(), r.GetRole().Name()))
	for _, s := range r.GetSteps() {
		p.step(pid, tid, r, s)
	}
	p.kvTransfers(pid, r)
}

// step adds one step of a rank, with its collectives nested inside.
func (p *perfetto) step(pid, tid int, r *tandemv1.RankTrace, s *tandemv1.StepTrace) {
	start := s.GetStartUnixNanos() + r.GetClockOffsetNanos()
	end := start + stepNanos(s)
	args := map[string]any{
		"step": s.GetStep(), "prefill_tokens": s.GetPrefillTokens(), "decode_tokens": s.GetDecodeTokens(),
		"queue_ms": ms(s.GetQueueNanos()), "schedule_ms": ms(s.GetScheduleNanos()),
		"compute_ms": ms(s.GetComputeNanos()), "sample_ms": ms(s.GetSampleNanos()),
		"free_blocks": s.GetFreeBlocks(), "clock_error_ms": ms(r.GetClockErrorNanos()),
	}
	if n := len(s.GetSeqs()); n > 0 {
		args["seqs"] = n
	}
	for _, o := range s.GetOps() {
		args["op_"+o.GetOp()+"_ms"] = ms(o.GetNanos())
	}
	if g := s.GetGpu(); g != nil {
		args["gpu_utilization_percent"] = g.GetUtilizationPercent()
		args["gpu_memory_used_bytes"] = g.GetMemoryUsedBytes()
		args["gpu_power_watts"] = g.GetPowerWatts()
		args["gpu_sm_clock_mhz"] = g.GetSmClockMhz()
	}
	p.ev = append(p.ev, p.complete(stepKind(s), "step", pid, tid, start, end, args))
	for _, c := range s.GetCollectives() {
		// Kept inside the step so that viewers nest it.
		from := min(end, start+max(0, c.GetOffsetNanos()))
		to := min(end, from+c.GetDurationNanos())
		p.ev = append(p.ev, p.complete(c.GetKind(), "collective", pid, tid, from, to, map[string]any{"bytes": c.GetBytes()}))
	}
}

// kvTransfers adds a rank's KV transfers, one thread per peer: a rank's
// pushes to different peers run at once, the layers to one peer in turn.
func (p *perfetto) kvTransfers(pid int, r *tandemv1.RankTrace) {
	kvTids := map[int32]int{}
	for _, kv := range r.GetKvTransfers() {
		// A prefill rank records what it sent, any other what it loaded;
		// a negative layer or rank is a record of all layers or from
		// all senders.
		peer, arrow, peerRole := kv.GetSourceRank(), "←", "prefill"
		if r.GetRole() == tandemv1.Role_ROLE_PREFILL {
			peer, arrow, peerRole = kv.GetDestRank(), "→", "decode"
		}
		peer = max(peer, -1)
		ktid, ok := kvTids[peer]
		if !ok {
			name := fmt.Sprintf("%s/rank %d KV %s %s", r.GetGroup(), r.GetRank(), arrow, peerRole)
			if peer >= 0 {
				name += fmt.Sprintf(" rank %d", peer)
			}
			ktid = p.thread(pid, name)
			kvTids[peer] = ktid
		}
		name := "kv all layers"
		if kv.GetLayer() >= 0 {
			name = fmt.Sprintf("kv layer %d", kv.GetLayer())
		}
		if peer >= 0 {
			name += fmt.Sprintf(" %s rank %d", arrow, peer)
		}
		start := kv.GetStartUnixNanos() + r.GetClockOffsetNanos()
		p.ev = append(p.ev, p.complete(name, "kv", pid, ktid, start, start+kv.GetDurationNanos(), map[string]any{
			"layer": kv.GetLayer(), "source_rank": kv.GetSourceRank(), "dest_rank": kv.GetDestRank(), "bytes": kv.GetBytes(),
		}))
	}
}
