package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/blockhash"
	"github.com/tandemllm/tandem/cluster"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// statsTimeout bounds one Stats call; a group that does not answer in
// time is not routed to until it does.
const statsTimeout = 2 * time.Second

// groupState is the coordinator's view of one registered group. Fields
// below the line are guarded by Coordinator.mu.
type groupState struct {
	name   string
	addr   string // rank 0's Worker address; "" while rank 0 is missing
	client tandemv1.WorkerClient
	// ctx ends when the group leaves the cluster (or re-registers with
	// another leader) or the coordinator closes; its cause says which.
	ctx   context.Context
	leave context.CancelCauseFunc

	group    cluster.Group
	stats    *tandemv1.StatsResponse // last polled; nil before the first poll
	polled   time.Time               // when the call that got stats started
	answered time.Time               // when it answered
	polling  bool
	failing  bool // the last Stats call failed: not routed to
	sent     []*sent
}

// sent is one request this coordinator routed to a group. It adjusts the
// group's load until the group's Stats count it: until a poll that
// started after the group confirmed it (answered the prefill, or sent the
// first tokens) answers, or the request's attempt ended. A poll that
// merely started after it was sent may have been under way before the
// request reached the group.
type sent struct {
	at        time.Time // when it was sent, then when it was confirmed
	tokens    int64     // prompt tokens given to a prefill group
	blocks    int64     // KV blocks the request will take on a decode or unified group
	answered  bool      // the prefill has answered: its tokens are no longer pending
	confirmed bool      // the group has answered: its Stats count it from then on
	streaming bool      // confirmed by its first tokens: the group runs it until it ends
	ended     bool      // the attempt is over
	endedAt   time.Time
}

// counted reports whether Stats polled from polled on count s.
func (s *sent) counted(polled time.Time) bool {
	return s.ended || s.confirmed && s.at.Before(polled)
}

// overcounted reports whether the Stats of the call from polled to
// answered count s as running although it has ended since: the group ran
// it through the whole call. Without this, a request that ended just
// after a poll kept its group a request busier until the next poll
// answered (up to StatsInterval later).
func (s *sent) overcounted(polled, answered time.Time) bool {
	return s.ended && s.streaming && s.at.Before(polled) && s.endedAt.After(answered)
}

// endedSince reports whether s ended at t or later: a poll that started
// at t may still count it, so it is kept until the next one.
func (s *sent) endedSince(t time.Time) bool {
	return s.ended && !s.endedAt.Before(t)
}

// load is a group's routing input: its last polled Stats adjusted by what
// this coordinator sent it since that poll.
type load struct {
	pendingTokens int64 // prompt tokens not yet prefilled
	freeBlocks    int64
	totalBlocks   int64 // 0 before the first poll
	running       int64
	waiting       int64
}

// estimate combines a group's last polled stats (nil before the first
// poll, when the free blocks registered are used; the call ran from polled
// to answered) with the requests sent since the poll started and those
// that have ended since it answered.
func estimate(st *tandemv1.StatsResponse, polled, answered time.Time, sents []*sent, registeredBlocks int64) load {
	var l load
	if st != nil {
		l = load{
			pendingTokens: st.PendingPrefillTokens,
			freeBlocks:    int64(st.KvBlocksFree),
			totalBlocks:   int64(st.KvBlocksTotal),
			running:       int64(st.RunningRequests),
			waiting:       int64(st.WaitingRequests),
		}
	} else {
		l.freeBlocks = registeredBlocks
	}
	for _, s := range sents {
		if s.counted(polled) {
			if s.overcounted(polled, answered) {
				l.running = max(l.running-1, 0)
			}
			continue
		}
		l.waiting++
		l.freeBlocks -= s.blocks
		if !s.answered {
			l.pendingTokens += s.tokens
		}
	}
	return l
}

// pickPrefill returns the index of the group with the fewest pending
// prompt tokens; ties go to the fewest running and waiting requests, then
// to the first (groups come sorted by name).
func pickPrefill(ls []load) int {
	return pick(ls, func(a, b load) int {
		return cmp.Or(cmp.Compare(a.pendingTokens, b.pendingTokens), cmp.Compare(a.running+a.waiting, b.running+b.waiting))
	})
}

// pickDecode returns the index of the group with the most free KV blocks;
// ties go to the fewest running requests, then the fewest waiting, then
// the first.
func pickDecode(ls []load) int {
	return pick(ls, func(a, b load) int {
		return cmp.Or(cmp.Compare(b.freeBlocks, a.freeBlocks), cmp.Compare(a.running, b.running), cmp.Compare(a.waiting, b.waiting))
	})
}

// pickUnified returns the index of the group with the fewest running and
// waiting requests; ties go to the most free KV blocks, then the first.
func pickUnified(ls []load) int {
	return pick(ls, func(a, b load) int {
		return cmp.Or(cmp.Compare(a.running+a.waiting, b.running+b.waiting), cmp.Compare(b.freeBlocks, a.freeBlocks))
	})
}

// pick returns the index of the first least element of ls under less, or
// -1 when ls is empty.
func pick(ls []load, compare func(a, b load) int) int {
	best := -1
	for i, l := range ls {
		if best < 0 || compare(l, ls[best]) < 0 {
			best = i
		}
	}
	return best
}

func blocksFor(tokens, blockSize int64) int64 {
	return (tokens + blockSize - 1) / blockSize
}

func (g *groupState) blockSize() int64 {
	if g.stats != nil && g.stats.KvBlockSize > 0 {
		return int64(g.stats.KvBlockSize)
	}
	// A valid registration has a block size; a missing rank 0 (size 0)
	// makes the group unroutable, so this is never used then.
	return int64(max(g.leader().KVBlockSize, 1))
}

func (g *groupState) load() load {
	return estimate(g.stats, g.polled, g.answered, g.sent, int64(g.leader().KVBlocks))
}

// leader is rank 0's registration (zero while rank 0 is missing).
func (g *groupState) leader() cluster.Registration {
	if len(g.group.Ranks) == 0 {
		return cluster.Registration{}
	}
	return g.group.Ranks[0]
}

// destination names g as the receiver of a prefill's KV, which need not
// send the first skip prompt positions (g holds them in its prefix
// cache). Called with the coordinator's lock held.
func (g *groupState) destination(skip int) *tandemv1.KVDestination {
	d := &tandemv1.KVDestination{Group: g.name, Tp: int32(g.group.TP), SkipTokens: int32(skip)}
	for _, r := range g.group.Ranks {
		d.RankAddresses = append(d.RankAddresses, r.Addr)
	}
	return d
}

// route is where one attempt of a request runs: prefill and decode
// groups, or one group for the whole request (a unified group, or after a
// migration a decode group that recomputes the prompt).
type route struct {
	prefill, decode, whole *groupState
	// What the route added to its groups' loads (see sent).
	prefillSent, decodeSent, wholeSent *sent
	// destination is the decode group as the prefill's KV receiver, read
	// under the coordinator's lock (membership updates rewrite it).
	destination *tandemv1.KVDestination
}

// groups lists the groups of a route, for aborts.
func (r route) groups() []*groupState {
	if r.whole != nil {
		return []*groupState{r.whole}
	}
	return []*groupState{r.prefill, r.decode}
}

// names are the route's prefill and decode group names, for traces; the
// group running the whole request counts as the decode group.
func (r route) names() (prefill, decode string) {
	if r.whole != nil {
		return "", r.whole.name
	}
	return r.prefill.name, r.decode.name
}

// pickRoute chooses the groups for a request with prompt, none of them in
// exclude, and counts it in their load. Disaggregated serving is
// preferred when both a prefill and a decode group are ready, then a
// unified group; with recompute (a migrated request), a decode group alone
// runs the whole request when no prefill group is ready. Within a role
// the groups are scored by the prefix of the prompt they hold and their
// load together (see choose).
func (c *Coordinator) pickRoute(prompt []int32, exclude map[*groupState]bool, recompute bool) (route, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var pre, dec, uni []*groupState
	for _, name := range slices.Sorted(maps.Keys(c.groups)) {
		g := c.groups[name]
		if !c.routable(g) || exclude[g] {
			continue
		}
		switch g.group.Role {
		case cluster.RolePrefill:
			pre = append(pre, g)
		case cluster.RoleDecode:
			dec = append(dec, g)
		case cluster.RoleUnified:
			uni = append(uni, g)
		}
	}
	now := time.Now()
	n := int64(len(prompt))
	hashes := map[int][]blockhash.Hash{} // the prompt's chain, per block size
	pick := func(gs []*groupState, r cluster.Role) candidate {
		cs := make([]candidate, len(gs))
		for i, g := range gs {
			cs[i] = candidate{g: g, load: g.load(), cached: c.cachedPrefix(g, prompt, hashes)}
		}
		best := c.opts.Routing.choose(cs, n, r)
		c.log.Debug("routed", "role", r, "group", best.g.name, "cached_tokens", best.cached, "prompt_tokens", n)
		c.metrics.RoutedPrefix(best.cached)
		return best
	}
	whole := func(cd candidate) route {
		g := cd.g
		s := &sent{at: now, blocks: blocksFor(n+1, g.blockSize()) - int64(cd.cached)/g.blockSize()}
		g.sent = append(g.sent, s)
		return route{whole: g, wholeSent: s}
	}
	switch {
	case len(pre) > 0 && len(dec) > 0:
		p, d := pick(pre, cluster.RolePrefill), pick(dec, cluster.RoleDecode)
		ps := &sent{at: now, tokens: n - int64(p.cached)}
		p.g.sent = append(p.g.sent, ps)
		ds := &sent{at: now, blocks: blocksFor(n+1, d.g.blockSize()) - int64(d.cached)/d.g.blockSize()}
		d.g.sent = append(d.g.sent, ds)
		return route{prefill: p.g, decode: d.g, prefillSent: ps, decodeSent: ds, destination: d.g.destination(d.cached)}, nil
	case len(uni) > 0:
		return whole(pick(uni, cluster.RoleUnified)), nil
	case recompute && len(dec) > 0:
		return whole(pick(dec, cluster.RoleDecode)), nil
	}
	return route{}, status.Error(codes.Unavailable, c.unservableLocked().Error())
}

// cachedPrefix is how many leading prompt tokens g holds in its prefix
// cache, as the index knows, in whole blocks and short of the block
// holding the last token (which a group always computes, and a decode
// group always receives). Called with c.mu held.
func (c *Coordinator) cachedPrefix(g *groupState, prompt []int32, hashes map[int][]blockhash.Hash) int {
	bs := int(g.blockSize())
	return min(c.index.cached(g, g.group.Model, prompt, hashes), (len(prompt)-1)/bs*bs)
}

// routable reports whether g may take new requests of this model: all its
// ranks have joined, its leader answers Stats, it serves the model.
// Called with c.mu held.
func (c *Coordinator) routable(g *groupState) bool {
	return g.client != nil && !g.failing && g.group.Ready() && c.model.serves(g.group.Model)
}

// WaitRoutable waits until the coordinator routes to every group named
// (registered whole, connected, its Stats not failing), or ctx ends; the
// error then names the groups it does not route to. A process that
// starts a cluster says it is up only then: a membership watch of its
// own may see the groups ready a moment before the coordinator's does.
func (c *Coordinator) WaitRoutable(ctx context.Context, groups ...string) error {
	for {
		c.mu.Lock()
		var missing []string
		for _, name := range groups {
			if g := c.groups[name]; g == nil || !c.routable(g) {
				missing = append(missing, name)
			}
		}
		if c.routingMoved == nil {
			c.routingMoved = make(chan struct{})
		}
		moved := c.routingMoved
		c.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("coordinator: not routing to %s: %w", strings.Join(missing, ", "), context.Cause(ctx))
		}
	}
}

// servableLocked returns nil when the model can be served now, otherwise
// an error saying why. Called with c.mu held.
func (c *Coordinator) servableLocked() error {
	var pre, dec, uni int
	for _, g := range c.groups {
		if !c.routable(g) {
			continue
		}
		switch g.group.Role {
		case cluster.RolePrefill:
			pre++
		case cluster.RoleDecode:
			dec++
		case cluster.RoleUnified:
			uni++
		}
	}
	if uni > 0 || pre > 0 && dec > 0 {
		return nil
	}
	return c.unservableLocked()
}

// unservableLocked describes why no group can take the model's requests.
func (c *Coordinator) unservableLocked() error {
	ready := map[cluster.Role]int{}
	for _, g := range c.groups {
		if c.routable(g) {
			ready[g.group.Role]++
		}
	}
	return fmt.Errorf("no ready group serves model %q (ready groups: %d prefill, %d decode, %d unified)",
		c.model.name, ready[cluster.RolePrefill], ready[cluster.RoleDecode], ready[cluster.RoleUnified])
}

// answered marks a prefill as answered, so its tokens no longer count as
// pending on its group.
func (c *Coordinator) answered(s *sent) {
	c.mu.Lock()
	s.answered = true
	s.at, s.confirmed = time.Now(), true
	c.mu.Unlock()
}

// running notes that the group has answered a request with its first
// tokens: a poll that starts from now on counts it.
func (c *Coordinator) running(s *sent) {
	c.mu.Lock()
	s.at, s.confirmed, s.streaming = time.Now(), true, true
	c.mu.Unlock()
}

// ended notes that the attempt a route was for is over: its groups' loads
// no longer include it, however far it got.
func (c *Coordinator) ended(rt route) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for _, s := range []*sent{rt.prefillSent, rt.decodeSent, rt.wholeSent} {
		if s != nil && !s.ended {
			s.ended, s.endedAt = true, now
		}
	}
}

// watch keeps c.groups in step with the cluster's membership. While etcd
// does not answer, the view is frozen: the groups known stay routable as
// long as their Stats answer.
func (c *Coordinator) watch(ctx context.Context) {
	available := true
	for {
		changed := c.members.Changed()
		if ok, why := c.members.Available(); ok != available {
			available = ok
			c.metrics.EtcdAvailable(ok)
			if ok {
				c.log.Info("etcd answers again; following the cluster's membership")
			} else {
				c.log.Warn("etcd does not answer; serving the groups known, membership frozen until it returns", "err", why)
			}
		}
		c.sync(ctx, c.members.Groups())
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// sync applies a membership snapshot: new groups get a state, groups that
// left (or whose leader moved) are cancelled, so requests on them fail at
// once, and connections no group uses any more are closed.
func (c *Coordinator) sync(ctx context.Context, groups []cluster.Group) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]bool, len(groups))
	for _, g := range groups {
		seen[g.Name] = true
		st := &groupState{name: g.Name, group: g}
		addr := st.leader().Addr
		old := c.groups[g.Name]
		c.logReadiness(old, g)
		if old != nil && old.addr == addr && old.group.Role == g.Role && old.group.Model == g.Model && old.group.TP == g.TP &&
			old.group.Incarnation == g.Incarnation {
			old.group = g
			continue
		}
		if old != nil {
			old.leave(fmt.Errorf("group %q re-registered with another leader or incarnation", g.Name))
		}
		st.addr = addr
		st.ctx, st.leave = context.WithCancelCause(ctx)
		if addr != "" {
			cc, err := c.conn(addr)
			if err != nil {
				c.log.Warn("cannot connect to group", "group", g.Name, "addr", addr, "err", err)
			} else {
				st.client = tandemv1.NewWorkerClient(cc)
				c.wg.Go(func() { c.followKVEvents(st) })
			}
		}
		c.groups[g.Name] = st
	}
	for name, g := range c.groups {
		if !seen[name] {
			g.leave(fmt.Errorf("group %q left the cluster", name))
			delete(c.groups, name)
			c.log.Info("group left", "group", name)
		}
	}
	inUse := make(map[string]bool)
	for _, g := range c.groups {
		inUse[g.addr] = true
	}
	for addr, cc := range c.conns {
		if !inUse[addr] {
			cc.Close()
			delete(c.conns, addr)
		}
	}
	c.updateHealthLocked()
}

// logReadiness logs a group's readiness when it changes from what the
// coordinator knew (old, nil for a group first seen): ready, or no longer
// ready (naming the missing ranks). Ranks joining one by one, or leaving
// one by one on a stop, are not news until the group is whole or broken.
func (c *Coordinator) logReadiness(old *groupState, g cluster.Group) {
	was := old != nil && old.group.Ready()
	switch now := g.Ready(); {
	case now && (!was || old.group.Incarnation != g.Incarnation):
		c.log.Info("group ready", "group", g.Name, "role", g.Role, "model", g.Model, "tp", g.TP, "incarnation", g.Incarnation)
	case !now && was:
		c.log.Info("group not ready", "group", g.Name, "missing_ranks", g.Missing())
	}
}

// dialOptions are how the coordinator dials workers: plain TCP or TLS,
// with the trace context carried along.
func (c *Coordinator) dialOptions() []grpc.DialOption {
	creds := insecure.NewCredentials()
	if c.opts.WorkerTLS != nil {
		creds = credentials.NewTLS(c.opts.WorkerTLS)
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, c.opts.Telemetry.DialOptions()...)
	return append(opts, c.opts.DialOptions...)
}

// conn returns the connection to a worker address, dialling it once.
// Called with c.mu held.
func (c *Coordinator) conn(addr string) (*grpc.ClientConn, error) {
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, c.dialOptions()...)
	if err != nil {
		return nil, fmt.Errorf("dialling %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// pollStats polls every group's Stats each StatsInterval until ctx ends.
func (c *Coordinator) pollStats(ctx context.Context) {
	t := time.NewTicker(c.opts.StatsInterval)
	defer t.Stop()
	for {
		c.mu.Lock()
		var due []*groupState
		for _, g := range c.groups {
			if g.client != nil && g.group.Ready() && !g.polling {
				g.polling = true
				due = append(due, g)
			}
		}
		c.mu.Unlock()
		for _, g := range due {
			c.wg.Go(func() { c.pollGroup(g) })
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Coordinator) pollGroup(g *groupState) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(g.ctx, statsTimeout)
	st, err := g.client.Stats(ctx, &tandemv1.StatsRequest{})
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	g.polling = false
	if err != nil {
		if !g.failing && g.ctx.Err() == nil {
			c.log.Warn("group stats failed; not routing to it until they answer", "group", g.name, "err", err)
		}
		g.failing = g.ctx.Err() == nil
		c.updateHealthLocked()
		return
	}
	if g.failing {
		c.log.Info("group stats answer again", "group", g.name)
	}
	g.failing = false
	g.stats, g.polled, g.answered = st, start, time.Now()
	defer c.updateHealthLocked()
	g.sent = slices.DeleteFunc(g.sent, func(s *sent) bool { return s.counted(start) && !s.endedSince(start) })
}
