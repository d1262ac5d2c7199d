package simulator

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/costmodel"
)

// Options configure one simulation. Zero fields take documented defaults.
type Options struct {
	// Cost prices every step and KV transfer (required).
	Cost       *costmodel.Model
	Deployment Deployment
	Engine     EngineOptions
	Workload   Workload
	SLO        SLO
	// KVCacheBytes is each rank's KV cache budget (default: the cost
	// model's, from the hardware profile).
	KVCacheBytes float64
}

// request is one request's life in the simulation.
type request struct {
	Request
	idx         int
	arrival     float64   // the client's scheduled send time, from its block's start
	sent        float64   // when it was sent (after the concurrency bound)
	tokens      []float64 // the client's receive time of each output token
	preemptions int
	failed      bool
	done        bool
	// Disaggregated serving: the groups, the prefill's held blocks and
	// transfer, the decode reservation.
	pre, dec  *group
	preSeq    *seq
	xferStart float64
	xferDone  float64 // −1 until the prefill's last chunk is done
	reserved  int
	parts     tokenParts
}

// group is one TP group: its scheduler and the step in flight.
type group struct {
	idx     int
	role    cluster.Role
	tp      int
	node    int
	span    costmodel.Group
	e       sched
	busy    bool
	cur     []scheduled
	cost    costmodel.StepCost
	start   float64
	threads int     // each rank's compute threads (shared devices)
	working bool    // in the step's device work, competing for the cores
	work    float64 // device work left, in seconds at the whole device's speed
	fixed   float64 // unshared time left (collectives, overhead)
	updated float64
	version int
	// Requests routed here but not yet arrived, as the coordinator counts them.
	inbound, inboundTokens, promised int
}

type eventKind int

const (
	evArrival  eventKind = iota
	evReach              // a request reaches its (first) group
	evWorkDone           // a step's device work is done; its collectives and overheads remain
	evStepEnd
	evDecodeCall
	evTransferDone
	evKVReady // a decode group has loaded a request's KV
	evRestart // the deployment starts afresh between blocks
)

type event struct {
	t       float64
	n       int // insertion order: ties run first in, first out
	kind    eventKind
	g       *group
	r       *request
	version int
}

type queue []event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].t != q[j].t {
		return q[i].t < q[j].t
	}
	return q[i].n < q[j].n
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(event)) }
func (q *queue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// sim is one run's state.
type sim struct {
	opts       Options
	cost       *costmodel.Model
	hop        float64 // coordinator ↔ group, one way
	now        float64
	q          queue
	n          int
	groups     []*group
	byRole     map[cluster.Role][]*group
	nodeBusy   []int // threads computing per node (shared devices)
	reqs       []*request
	backlog    []*request // waiting for the concurrency bound
	inFlight   int
	next, left int // the first request of the next block; the current block's unfinished
	steps      int
	stepErr    error
	lastFinish float64
}

// Run simulates opts.Workload on opts.Deployment.
func Run(opts Options) (*Result, error) {
	if opts.Cost == nil {
		return nil, errors.New("simulator: no cost model")
	}
	if err := opts.Deployment.validate(); err != nil {
		return nil, err
	}
	opts.Engine.defaults()
	s := &sim{opts: opts, cost: opts.Cost, hop: opts.Cost.Eff.RequestOverhead / 2, byRole: map[cluster.Role][]*group{}}
	if err := s.place(); err != nil {
		return nil, err
	}
	reqs, at, err := opts.Workload.requests()
	if err != nil {
		return nil, err
	}
	for i, r := range reqs {
		s.reqs = append(s.reqs, &request{Request: r, idx: i, arrival: at[i], xferDone: -1})
	}
	s.startBlock(0)
	for s.q.Len() > 0 {
		ev := heap.Pop(&s.q).(event)
		s.now = ev.t
		s.handle(ev)
		if s.stepErr != nil {
			return nil, s.stepErr
		}
	}
	for _, r := range s.reqs {
		if !r.done && !r.failed {
			return nil, fmt.Errorf("simulator: request %d never finished (%d of %d tokens): a scheduling rule is mirrored wrongly", r.idx, len(r.tokens), r.Output)
		}
	}
	return s.result(), nil
}

func (s *sim) push(ev event) {
	ev.n = s.n
	s.n++
	heap.Push(&s.q, ev)
}

// place makes the groups, sizes their KV pools and puts them on nodes:
// groups fill nodes in order, prefill (or unified) groups first, one
// device per rank; on a shared device (CPU) every rank of a node shares it.
func (s *sim) place() error {
	d, m := s.opts.Deployment, s.cost
	pools := []struct {
		role cluster.Role
		p    Pool
	}{{roleUnified, d.Unified}}
	if d.Mode == ModeDisaggregated {
		pools = []struct {
			role cluster.Role
			p    Pool
		}{{rolePrefill, d.Prefill}, {roleDecode, d.Decode}}
	}
	device := 0
	perNode := m.HW.GPUsPerNode
	threads := s.opts.Engine.Threads
	if threads <= 0 {
		threads = m.ThreadsPerRank(d.GPUs())
	}
	for _, pl := range pools {
		kvBytes := s.opts.KVCacheBytes
		if kvBytes <= 0 {
			var err error
			if kvBytes, err = m.KVCacheBytesPerRank(pl.p.TP); err != nil {
				return err
			}
		}
		eo := s.opts.Engine
		blocks, err := kvBlocks(m, pl.p.TP, eo, kvBytes)
		if err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
		for range pl.p.Groups {
			g := &group{idx: len(s.groups), role: pl.role, tp: pl.p.TP, span: m.GroupOf(pl.p.TP), threads: threads}
			g.e = sched{opts: eo, free: blocks, total: blocks}
			if !m.HW.Shared {
				g.node = device / perNode
				device += pl.p.TP
			}
			s.groups = append(s.groups, g)
			s.byRole[pl.role] = append(s.byRole[pl.role], g)
			s.nodeBusy = append(s.nodeBusy, 0)
		}
	}
	return nil
}

// kvBlocks is the KV blocks of a TP-tp rank with a cache of kvBytes, as
// engine.New sizes its pool: whole blocks of the cache's element type,
// at most enough for MaxSeqs sequences of the longest context.
func kvBlocks(m *costmodel.Model, tp int, eo EngineOptions, kvBytes float64) (int, error) {
	perToken, err := m.Shape.KVBytesPerTokenPerRank(tp)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidDeployment, err)
	}
	blocks := int(kvBytes / float64(perToken*int64(eo.BlockSize)))
	if full := (m.Shape.MaxPositions + eo.BlockSize - 1) / eo.BlockSize; full > 0 {
		blocks = min(blocks, full*eo.MaxSeqs)
	}
	if blocks < 1 {
		return 0, fmt.Errorf("%w: a rank's KV cache of %.0f bytes holds no block", costmodel.ErrDoesNotFit, kvBytes)
	}
	return blocks, nil
}

func (s *sim) handle(ev event) {
	switch ev.kind {
	case evArrival:
		if max := s.opts.Workload.MaxConcurrency; max > 0 && s.inFlight >= max {
			s.backlog = append(s.backlog, ev.r)
			return
		}
		s.send(ev.r)
	case evReach:
		s.reach(ev.r)
	case evWorkDone:
		if ev.version == ev.g.version && ev.g.working {
			s.workDone(ev.g)
		}
	case evStepEnd:
		if ev.version == ev.g.version && ev.g.busy && !ev.g.working {
			s.endStep(ev.g)
		}
	case evDecodeCall:
		s.decodeCall(ev.r)
	case evTransferDone:
		s.transferDone(ev.r)
	case evKVReady:
		s.addPrefilled(ev.r)
	case evRestart:
		s.restart()
	}
}

// send routes a request, as the coordinator does, and lets it reach its
// group a hop later.
func (s *sim) send(r *request) {
	s.inFlight++
	r.sent = s.now
	if s.opts.Deployment.Mode == ModeUnified {
		r.pre = choose(s.byRole[roleUnified], r, roleUnified)
	} else {
		r.pre = choose(s.byRole[rolePrefill], r, rolePrefill)
		r.dec = pickDecode(open(s.byRole[roleDecode], r, true))
		r.dec.promised += r.pre.e.blocksFor(r.Input)
	}
	r.pre.inbound++
	r.pre.inboundTokens += r.Input
	s.push(event{t: s.now + s.hop, kind: evReach, r: r})
}

// reach queues a request on its first group; a request that can never
// fit its KV cache fails as the engine refuses it.
func (s *sim) reach(r *request) {
	g := r.pre
	g.inbound--
	g.inboundTokens -= r.Input
	out := r.Output
	if g.role == rolePrefill {
		out = 1
	}
	if g.e.blocksFor(r.Input+out) > g.e.total || (r.dec != nil && r.dec.e.blocksFor(r.Input+r.Output) > r.dec.e.total) {
		r.failed = true
		s.complete(r)
		return
	}
	sq := &seq{r: r, tokens: r.Input, maxTokens: out, hold: g.role == rolePrefill}
	if g.role == rolePrefill {
		r.preSeq = sq
	}
	g.e.waiting = append(g.e.waiting, sq)
	s.kick(g)
}

// kick starts a step on an idle group that has work.
func (s *sim) kick(g *group) {
	if !g.busy && g.e.hasWork() {
		s.startStep(g)
	}
}

// rate is how fast a group's device work proceeds: 1, or on a shared
// device its ranks' fair share of the cores among the threads computing
// there (costmodel.Model.SharedRate).
func (s *sim) rate(g *group) float64 {
	if !s.cost.HW.Shared {
		return 1
	}
	return s.cost.SharedRate(g.threads, s.nodeBusy[g.node])
}

// advance brings a busy group's progress up to now.
func (s *sim) advance(g *group) {
	dt := s.now - g.updated
	g.updated = s.now
	if g.working {
		g.work = max(0, g.work-dt*s.rate(g))
		return
	}
	g.fixed = max(0, g.fixed-dt)
}

// reschedule posts the end of g's device work, or of its step, from its
// progress and current rate.
func (s *sim) reschedule(g *group) {
	g.version++
	if g.working {
		s.push(event{t: s.now + g.work/s.rate(g), kind: evWorkDone, g: g, version: g.version})
		return
	}
	s.push(event{t: s.now + g.fixed, kind: evStepEnd, g: g, version: g.version})
}

// setWorking moves g into or out of its device work; on a shared device
// every group computing beside it changes speed. Ranks waiting in a
// collective or for the step's sampling do not compete for the cores.
func (s *sim) setWorking(g *group, on bool) {
	g.working = on
	if !s.cost.HW.Shared {
		return
	}
	var others []*group
	for _, o := range s.groups {
		if o != g && o.working && o.node == g.node {
			s.advance(o)
			others = append(others, o)
		}
	}
	delta := g.tp * g.threads
	if !on {
		delta = -delta
	}
	s.nodeBusy[g.node] += delta
	for _, o := range others {
		s.reschedule(o)
	}
}

func (s *sim) startStep(g *group) {
	steps := g.e.schedule()
	if len(steps) == 0 {
		return
	}
	rows := make([]costmodel.Rows, len(steps))
	for i, st := range steps {
		rows[i] = costmodel.Rows{Pos: st.s.computed, Rows: st.n, Sample: st.sample}
		if st.sample && g.role == rolePrefill {
			st.s.r.xferStart = s.now
		}
	}
	c, err := s.cost.Step(g.span, rows)
	if err != nil {
		s.stepErr = fmt.Errorf("simulator: step of %s group %d: %w", g.role, g.idx, err)
		return
	}
	s.steps++
	g.busy, g.cur, g.cost, g.start, g.updated = true, steps, c, s.now, s.now
	// Sampling runs on rank 0 alone while the other ranks wait, so it
	// does not share the device with them.
	g.work = c.Compute()
	g.fixed = c.Communication() + c.Overhead + c.Sampling
	if g.work > 0 {
		s.setWorking(g, true)
	}
	s.reschedule(g)
}

// workDone ends g's device work: its ranks stop competing for the cores
// while the step's collectives and overheads run out.
func (s *sim) workDone(g *group) {
	s.advance(g)
	g.work = 0
	s.setWorking(g, false)
	s.reschedule(g)
}

func (s *sim) endStep(g *group) {
	s.advance(g)
	g.busy = false
	dur := s.now - g.start
	for _, st := range g.cur {
		sq := st.s
		sq.computed += st.n
		g.e.register(sq)
		sq.r.parts.add(g, s.cost.Eff, s.cost.HW.Shared, dur)
		if !st.sample {
			continue
		}
		sq.tokens++
		sq.generated++
		s.emit(g, sq)
		if sq.generated >= sq.maxTokens {
			g.e.finish(sq)
		}
	}
	g.cur = nil
	s.kick(g)
}

// emit delivers a sampled token to the client, and on a prefill group
// starts the request's way to its decode group.
func (s *sim) emit(g *group, sq *seq) {
	r := sq.r
	r.tokens = append(r.tokens, s.now+s.hop)
	r.parts.tokens++
	if g.role != rolePrefill {
		if len(r.tokens) >= r.Output {
			s.complete(r)
		}
		return
	}
	total, err := s.cost.KVTransfer(g.tp, r.dec.tp, r.Input, g.node != r.dec.node)
	if err != nil {
		s.stepErr = err
		return
	}
	r.xferDone = s.now + s.cost.VisibleTransfer(total, s.now-r.xferStart)
	s.push(event{t: r.xferDone, kind: evTransferDone, r: r})
	if r.Output == 1 {
		s.complete(r)
		return
	}
	s.push(event{t: s.now + 2*s.hop, kind: evDecodeCall, r: r})
}

// decodeCall is Worker.Decode on the decode leader: reserve blocks for
// the prompt, wait for its KV, or recompute when no blocks are free.
func (s *sim) decodeCall(r *request) {
	g := r.dec
	g.promised -= g.e.blocksFor(r.Input)
	need := g.e.blocksFor(r.Input)
	if need > g.e.free {
		sq := &seq{r: r, tokens: r.Input + 1, generated: 1, maxTokens: r.Output}
		g.e.waiting = append(g.e.waiting, sq)
		s.kick(g)
		return
	}
	g.e.free -= need
	r.reserved = need
	// Every decode rank waits for its share, then writes it into the
	// reserved blocks (Rank.LoadKV); the traces count that span as the
	// KV transfer of the first decoded token.
	ready := max(s.now, r.xferDone) + s.cost.KVLoad(r.pre.tp, g.tp, r.Input) + s.hop
	r.parts.kv += ready - s.now
	s.push(event{t: ready, kind: evKVReady, r: r})
}

// transferDone releases the prefill's held blocks.
func (s *sim) transferDone(r *request) {
	pre := r.pre
	pre.e.release(r.preSeq)
	s.kick(pre)
}

// addPrefilled is engine.AddPrefilled with reserved blocks: the prompt is
// computed, the first token is next.
func (s *sim) addPrefilled(r *request) {
	g := r.dec
	sq := &seq{r: r, tokens: r.Input + 1, computed: r.Input, generated: 1, maxTokens: r.Output, blocks: r.reserved}
	g.e.running = append(g.e.running, sq)
	s.kick(g)
}

// startBlock starts the client's next run, the requests of the next
// block, at t, on a deployment started afresh if its first request says
// so.
func (s *sim) startBlock(t float64) {
	lo := s.next
	if lo < len(s.reqs) && s.reqs[lo].Restart {
		// An event, first at t, so that the step that ended the block
		// before has released its sequences.
		s.push(event{t: t, kind: evRestart})
	}
	for s.next < len(s.reqs) && s.reqs[s.next].Block == s.reqs[lo].Block {
		r := s.reqs[s.next]
		s.push(event{t: t + r.arrival, kind: evArrival, r: r})
		s.next++
	}
	s.left = s.next - lo
}

// restart empties every group's prefix cache, as a freshly started
// worker's is. It runs between blocks, when no sequence holds blocks
// and the free pool already counts the cached ones; should a sequence
// still hold its prefix, that prefix stays.
func (s *sim) restart() {
	for _, g := range s.groups {
		g.e.cache = slices.DeleteFunc(g.e.cache, func(c *cachedPrefix) bool { return c.refs == 0 })
	}
}

// complete ends a request for the client and lets the next one in; the
// last of a block starts the next block when the client has its token.
func (s *sim) complete(r *request) {
	r.done = !r.failed
	s.inFlight--
	s.lastFinish = max(s.lastFinish, s.now+s.hop)
	if len(s.backlog) > 0 {
		next := s.backlog[0]
		s.backlog = s.backlog[1:]
		s.send(next)
	}
	if s.left--; s.left == 0 && s.next < len(s.reqs) {
		s.startBlock(s.lastFinish)
	}
}

// choose is the coordinator's choice (coordinator/score.go) of a
// prefill or unified group for r among gs: the highest
// 2·cached/n − busy, cached being the prompt tokens the group's prefix
// cache holds and busy its load over the most any open group has
// (pending prompt tokens on prefill groups, requests on unified ones);
// equal scores go by the role's own order.
func choose(gs []*group, r *request, role cluster.Role) *group {
	cands := open(gs, r, role != rolePrefill)
	busy := func(g *group) int {
		if role == rolePrefill {
			return g.e.pendingPrefill() + g.inboundTokens
		}
		return g.load()
	}
	most := 0
	for _, g := range cands {
		most = max(most, busy(g))
	}
	var best []*group
	bestScore := math.Inf(-1)
	for _, g := range cands {
		score := prefixWeight * float64(g.cachedTokens(r)) / float64(r.Input)
		if most > 0 {
			score -= float64(busy(g)) / float64(most)
		}
		switch {
		case score > bestScore+1e-9:
			best, bestScore = []*group{g}, score
		case score >= bestScore-1e-9:
			best = append(best, g)
		}
	}
	if role == rolePrefill {
		return pickPrefill(best)
	}
	return pickUnified(best)
}

// prefixWeight is the coordinator's --prefix-weight default: how much the
// share of a prompt a group caches counts against its load.
const prefixWeight = 2

// cachedTokens is the leading tokens of r's prompt g's prefix cache holds.
func (g *group) cachedTokens(r *request) int {
	if c := g.e.cached(r.Prefix); c != nil {
		return c.blocks * g.e.opts.BlockSize
	}
	return 0
}

// pickUnified: fewest running and waiting, then most free KV blocks,
// then the first.
func pickUnified(gs []*group) *group {
	return pick(gs, func(a, b *group) bool {
		la, lb := a.load(), b.load()
		if la != lb {
			return la < lb
		}
		return a.e.free > b.e.free
	})
}

// pickPrefill: fewest pending prompt tokens, then fewest running and waiting.
func pickPrefill(gs []*group) *group {
	return pick(gs, func(a, b *group) bool {
		pa, pb := a.e.pendingPrefill()+a.inboundTokens, b.e.pendingPrefill()+b.inboundTokens
		if pa != pb {
			return pa < pb
		}
		return a.load() < b.load()
	})
}

// pickDecode: most free KV blocks (less those promised to requests on
// their way), then fewest running, then fewest waiting.
func pickDecode(gs []*group) *group {
	return pick(gs, func(a, b *group) bool {
		fa, fb := a.e.free-a.promised, b.e.free-b.promised
		if fa != fb {
			return fa > fb
		}
		if len(a.e.running) != len(b.e.running) {
			return len(a.e.running) < len(b.e.running)
		}
		return len(a.e.waiting) < len(b.e.waiting)
	})
}

func (g *group) load() int { return len(g.e.running) + len(g.e.waiting) + g.inbound }

// maxRequests is the coordinator's --group-max-requests default: a group
// with this many requests in flight is skipped while another is not.
const maxRequests = 256

// open are the groups the coordinator does not skip as at their limit
// (coordinator/score.go): too many requests in flight or, for a group
// that will hold the request's KV, too few free blocks for the prompt
// and one token beyond those it caches; all of them when every one is.
func open(gs []*group, r *request, holdsKV bool) []*group {
	var out []*group
	for _, g := range gs {
		need := g.e.blocksFor(r.Input+1) - g.cachedTokens(r)/g.e.opts.BlockSize
		if g.load() >= maxRequests || holdsKV && g.e.free-g.promised < need {
			continue
		}
		out = append(out, g)
	}
	if len(out) == 0 {
		return gs
	}
	return out
}

// pick returns the first group no other beats.
func pick(gs []*group, better func(a, b *group) bool) *group {
	best := gs[0]
	for _, g := range gs[1:] {
		if better(g, best) {
			best = g
		}
	}
	return best
}
