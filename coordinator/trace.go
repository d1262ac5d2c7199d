package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/tracing"
)

// Traces: the coordinator remembers the last Options.TraceHistory
// requests (their arrival, tokens as received, groups and end); a trace
// is assembled on demand by asking every rank of those groups for its
// flight-recorder records and converting their clocks with the offsets
// estimated by periodic NTP-style exchanges.

const (
	clockSamples  = 8                // exchanges per estimate; the fastest round trip wins
	clockMaxAge   = 30 * time.Second // re-estimated this often
	traceRPCLimit = 5 * time.Second  // per rank, when assembling a trace
)

// traceRecord is what the coordinator knows of one request for its trace.
type traceRecord struct {
	mu       sync.Mutex
	id       string
	model    string
	arrival  time.Time
	tokenize time.Duration
	prompt   int
	tokens   []*tandemv1.TokenTrace
	finish   tandemv1.FinishReason
	end      time.Time
	prefill  string
	decode   string
	// migrations are the request's moves to other groups, in order.
	migrations []*tandemv1.Migration
}

// migrated notes a move of the request to other groups.
func (t *traceRecord) migrated(m *tandemv1.Migration) {
	t.mu.Lock()
	t.migrations = append(t.migrations, m)
	t.mu.Unlock()
}

func (t *traceRecord) token(id int32, at time.Time, group string, step uint64) {
	t.mu.Lock()
	t.tokens = append(t.tokens, &tandemv1.TokenTrace{Index: int32(len(t.tokens)), TokenId: id, UnixNanos: at.UnixNano(), Group: group, Step: step})
	t.mu.Unlock()
}

// close notes the request's end; the first call wins.
func (t *traceRecord) close(reason tandemv1.FinishReason) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.end.IsZero() {
		t.finish, t.end = reason, time.Now()
	}
}

func (t *traceRecord) summary() *tandemv1.RequestSummary {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &tandemv1.RequestSummary{
		RequestId: t.id, ArrivalUnixNanos: t.arrival.UnixNano(), PromptTokens: int32(t.prompt),
		CompletionTokens: int32(len(t.tokens)), FinishReason: t.finish,
	}
	for _, a := range t.attempts() {
		for _, g := range []string{a.prefill, a.decode} {
			if g != "" && !slices.Contains(s.Groups, g) {
				s.Groups = append(s.Groups, g)
			}
		}
	}
	s.Migrations = int32(len(t.migrations))
	if len(t.tokens) > 0 {
		s.TtftMs = float64(t.tokens[0].GetUnixNanos()-t.arrival.UnixNano()) / 1e6
		s.TpotMs = float64(t.tpot()) / 1e6
	}
	return s
}

// tpot is the mean time per output token after the first (0 with fewer
// than two tokens). t.mu must be held.
func (t *traceRecord) tpot() time.Duration {
	n := len(t.tokens)
	if n < 2 {
		return 0
	}
	return time.Duration(t.tokens[n-1].GetUnixNanos()-t.tokens[0].GetUnixNanos()) / time.Duration(n-1)
}

func (t *traceRecord) snapshot() *tandemv1.RequestTrace {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := &tandemv1.RequestTrace{
		RequestId: t.id, Model: t.model, ArrivalUnixNanos: t.arrival.UnixNano(), TokenizeNanos: int64(t.tokenize),
		PromptTokens: int32(t.prompt), FinishReason: t.finish, PrefillGroup: t.prefill, DecodeGroup: t.decode,
	}
	for _, tok := range t.tokens {
		rt.Tokens = append(rt.Tokens, proto.CloneOf(tok))
	}
	for _, m := range t.migrations {
		rt.Migrations = append(rt.Migrations, proto.CloneOf(m))
	}
	if !t.end.IsZero() {
		rt.EndUnixNanos = t.end.UnixNano()
	} else {
		rt.EndUnixNanos = time.Now().UnixNano()
	}
	return rt
}

// attemptGroups are the groups of one attempt of a request and the id
// they know it by.
type attemptGroups struct {
	prefill, decode, workerID string
}

// attempts lists the request's attempts: the first route, then each
// migration's. t.mu must be held.
func (t *traceRecord) attempts() []attemptGroups {
	out := []attemptGroups{{t.prefill, t.decode, t.id}}
	for _, m := range t.migrations {
		out = append(out, attemptGroups{m.GetPrefillGroup(), m.GetDecodeGroup(), m.GetWorkerRequestId()})
	}
	return out
}

// history is a bounded FIFO of recent requests' trace records.
type history struct {
	mu    sync.Mutex
	limit int
	order []string
	byID  map[string]*traceRecord
}

func newHistory(limit int) *history {
	return &history{limit: limit, byID: make(map[string]*traceRecord)}
}

func (h *history) add(r *traceRecord) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, dup := h.byID[r.id]; dup {
		h.order = slices.DeleteFunc(h.order, func(id string) bool { return id == r.id })
	}
	h.byID[r.id] = r
	h.order = append(h.order, r.id)
	for len(h.order) > h.limit {
		delete(h.byID, h.order[0])
		h.order = h.order[1:]
	}
}

func (h *history) get(id string) *traceRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byID[id]
}

func (h *history) recent(limit int) []*traceRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*traceRecord
	for i := len(h.order) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, h.byID[h.order[i]])
	}
	return out
}

// ListRequests returns the most recent requests, newest first.
func (c *Coordinator) ListRequests(_ context.Context, limit int) ([]*tandemv1.RequestSummary, error) {
	if limit <= 0 {
		limit = 100
	}
	var out []*tandemv1.RequestSummary
	for _, r := range c.history.recent(limit) {
		out = append(out, r.summary())
	}
	return out, nil
}

// GetTrace assembles a request's cross-node trace; NOT_FOUND for an id
// not in the history.
func (c *Coordinator) GetTrace(ctx context.Context, id string) (*tandemv1.RequestTrace, error) {
	rec := c.history.get(id)
	if rec == nil {
		return nil, status.Errorf(codes.NotFound, "request_id: no recent request %q (the coordinator keeps the last %d)", id, c.opts.TraceHistory)
	}
	rt := rec.snapshot()
	rec.mu.Lock()
	attempts := rec.attempts()
	rec.mu.Unlock()
	for _, a := range attempts {
		for _, name := range []string{a.prefill, a.decode} {
			if name == "" {
				continue
			}
			c.mu.Lock()
			g := c.groups[name]
			var (
				ranks []rankAddr
				role  tandemv1.Role
			)
			if g != nil {
				for r, reg := range g.group.Ranks {
					ranks = append(ranks, rankAddr{rank: r, addr: reg.Addr})
				}
				role = g.group.Role.Proto()
			}
			c.mu.Unlock()
			if g == nil {
				if miss := name + ": the group left the cluster"; !slices.Contains(rt.MissingRanks, miss) {
					rt.MissingRanks = append(rt.MissingRanks, miss)
				}
				continue
			}
			c.collectGroup(ctx, rt, name, role, ranks, a.workerID)
		}
	}
	return rt, nil
}

type rankAddr struct {
	rank int
	addr string
}

// collectGroup asks rank 0 for the steps that held the request (known
// there as workerID), then the other ranks for the same steps, and adds
// a RankTrace per rank, or adds to the rank's trace when an earlier
// attempt ran on the group too. Steps name the request by its own id,
// whichever attempt they served.
func (c *Coordinator) collectGroup(ctx context.Context, rt *tandemv1.RequestTrace, group string, role tandemv1.Role, ranks []rankAddr, workerID string) {
	var ids []uint64
	for _, ra := range ranks {
		if ra.addr == "" {
			rt.MissingRanks = append(rt.MissingRanks, fmt.Sprintf("%s/%d: not registered", group, ra.rank))
			continue
		}
		req := &tandemv1.StepsRequest{RequestId: workerID, Steps: ids}
		resp, est, err := c.rankSteps(ctx, ra.addr, req)
		if err != nil {
			rt.MissingRanks = append(rt.MissingRanks, fmt.Sprintf("%s/%d: %v", group, ra.rank, err))
			continue
		}
		if ra.rank == 0 {
			for _, s := range resp.GetSteps() {
				ids = append(ids, s.GetStep())
			}
		}
		renameSeqs(resp.GetSteps(), workerID, rt.RequestId)
		addRankTrace(rt, &tandemv1.RankTrace{
			Node: resp.GetNode(), Group: group, Role: role, Rank: int32(ra.rank), Addr: ra.addr,
			ClockOffsetNanos: int64(est.Offset), ClockErrorNanos: int64(est.Error),
			Steps: resp.GetSteps(), KvTransfers: resp.GetKvTransfers(), PeakRssBytes: resp.GetPeakRssBytes(),
		})
	}
}

// renameSeqs names the request by its own id in steps that know it as
// one of its attempts.
func renameSeqs(steps []*tandemv1.StepTrace, from, to string) {
	if from == to {
		return
	}
	for _, s := range steps {
		for _, q := range s.GetSeqs() {
			if q.GetRequestId() == from {
				q.RequestId = to
			}
		}
	}
}

// addRankTrace adds lane to rt, merged into the lane of the same rank
// when an earlier attempt ran on its group.
func addRankTrace(rt *tandemv1.RequestTrace, lane *tandemv1.RankTrace) {
	i := slices.IndexFunc(rt.Ranks, func(r *tandemv1.RankTrace) bool {
		return r.GetGroup() == lane.GetGroup() && r.GetRank() == lane.GetRank() && r.GetAddr() == lane.GetAddr()
	})
	if i < 0 {
		rt.Ranks = append(rt.Ranks, lane)
		return
	}
	old := rt.Ranks[i]
	for _, s := range lane.GetSteps() {
		if !slices.ContainsFunc(old.Steps, func(o *tandemv1.StepTrace) bool { return o.GetStep() == s.GetStep() }) {
			old.Steps = append(old.Steps, s)
		}
	}
	slices.SortFunc(old.Steps, func(a, b *tandemv1.StepTrace) int { return cmp.Compare(a.GetStep(), b.GetStep()) })
	old.KvTransfers = append(old.KvTransfers, lane.GetKvTransfers()...)
	old.PeakRssBytes = max(old.PeakRssBytes, lane.GetPeakRssBytes())
}

// rankSteps fetches a rank's records and its clock estimate.
func (c *Coordinator) rankSteps(ctx context.Context, addr string, req *tandemv1.StepsRequest) (*tandemv1.StepsResponse, tracing.ClockEstimate, error) {
	ctx, cancel := context.WithTimeout(ctx, traceRPCLimit)
	defer cancel()
	cc, err := grpc.NewClient(addr, c.dialOptions()...)
	if err != nil {
		return nil, tracing.ClockEstimate{}, err
	}
	defer cc.Close()
	rank := tandemv1.NewRankClient(cc)
	est, err := c.clockOf(ctx, addr, rank)
	if err != nil {
		return nil, est, err
	}
	resp, err := rank.Steps(ctx, req)
	return resp, est, err
}

// clockOf returns addr's clock estimate, refreshing one older than
// clockMaxAge.
func (c *Coordinator) clockOf(ctx context.Context, addr string, rank tandemv1.RankClient) (tracing.ClockEstimate, error) {
	c.clockMu.Lock()
	est, ok := c.clocks[addr]
	c.clockMu.Unlock()
	if ok && time.Since(est.At) < clockMaxAge {
		return est, nil
	}
	return c.estimateClock(ctx, addr, rank)
}

// estimateClock runs an NTP-style exchange with one rank.
func (c *Coordinator) estimateClock(ctx context.Context, addr string, rank tandemv1.RankClient) (tracing.ClockEstimate, error) {
	samples := make([]tracing.ClockSample, 0, clockSamples)
	for range clockSamples {
		sent := time.Now()
		resp, err := rank.Clock(ctx, &tandemv1.ClockRequest{})
		if err != nil {
			return tracing.ClockEstimate{}, fmt.Errorf("clock exchange with %s: %w", addr, err)
		}
		samples = append(samples, tracing.ClockSample{Sent: sent, Received: time.Now(), Server: resp.GetUnixNanos()})
	}
	est, err := tracing.EstimateClock(samples)
	if err != nil {
		return est, err
	}
	c.clockMu.Lock()
	c.clocks[addr] = est
	c.clockMu.Unlock()
	return est, nil
}

// keepClocks estimates the clock of every registered rank when it joins
// and every clockMaxAge after, so a trace has offsets measured near the
// time of its steps.
func (c *Coordinator) keepClocks(ctx context.Context) {
	t := time.NewTicker(clockMaxAge / 3)
	defer t.Stop()
	for {
		changed := c.members.Changed()
		var addrs []string
		for _, g := range c.members.Groups() {
			for _, reg := range g.Ranks {
				if reg.Addr != "" {
					addrs = append(addrs, reg.Addr)
				}
			}
		}
		c.clockMu.Lock()
		due := slices.DeleteFunc(addrs, func(a string) bool {
			est, ok := c.clocks[a]
			return ok && time.Since(est.At) < clockMaxAge
		})
		for a := range c.clocks { // forget ranks that left
			if !slices.Contains(addrs, a) && time.Since(c.clocks[a].At) > clockMaxAge {
				delete(c.clocks, a)
			}
		}
		c.clockMu.Unlock()
		for _, addr := range due {
			cc, err := grpc.NewClient(addr, c.dialOptions()...)
			if err != nil {
				continue
			}
			ectx, cancel := context.WithTimeout(ctx, traceRPCLimit)
			if _, err := c.estimateClock(ectx, addr, tandemv1.NewRankClient(cc)); err != nil {
				c.log.Debug("clock estimate failed", "addr", addr, "err", err)
			}
			cancel()
			cc.Close()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// tracesServer serves the Traces API from the coordinator's history.
type tracesServer struct {
	tandemv1.UnimplementedTracesServer
	c *Coordinator
}

func (s tracesServer) GetTrace(ctx context.Context, req *tandemv1.GetTraceRequest) (*tandemv1.GetTraceResponse, error) {
	if req.GetRequestId() == "" {
		return nil, status.Error(codes.InvalidArgument, "request_id: required")
	}
	rt, err := s.c.GetTrace(ctx, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	return &tandemv1.GetTraceResponse{Trace: rt}, nil
}

func (s tracesServer) ListRequests(ctx context.Context, req *tandemv1.ListRequestsRequest) (*tandemv1.ListRequestsResponse, error) {
	if req.GetLimit() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "limit %d: must be >= 0", req.GetLimit())
	}
	rs, err := s.c.ListRequests(ctx, int(req.GetLimit()))
	if err != nil {
		return nil, err
	}
	return &tandemv1.ListRequestsResponse{Requests: rs}, nil
}
