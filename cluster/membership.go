package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
)

// ErrRankTaken is wrapped when a (group, rank) is already registered.
var ErrRankTaken = errors.New("cluster: rank already registered")

// ErrClientClosed is why a registration ended when its etcd client was
// closed under it (Registered.Err): nothing can renew its lease.
var ErrClientClosed = errors.New("cluster: etcd client closed")

// DefaultMemberTTL is the lease TTL Register uses when given 0: a crashed
// worker disappears from the membership this long after its last
// keepalive.
const DefaultMemberTTL = 5 * time.Second

const membersPrefix = KeyPrefix + "members/"

func memberKey(group string, rank int) string {
	return membersPrefix + group + "/" + strconv.Itoa(rank)
}

// Registration is one worker rank's entry in etcd.
type Registration struct {
	Role        Role   `json:"role"`          // RolePrefill, RoleDecode or RoleUnified
	Group       string `json:"group"`         // group name, no '/'
	Rank        int    `json:"rank"`          // this rank, in [0, TP)
	TP          int    `json:"tp"`            // the group's rank count
	Addr        string `json:"addr"`          // host:port of this rank's gRPC server (Worker on rank 0, KVTransfer and internal services on all)
	Model       string `json:"model"`         // model id served
	KVBlocks    int    `json:"kv_blocks"`     // KV cache blocks in the pool
	KVBlockSize int    `json:"kv_block_size"` // token slots per block, at least 1
	// Incarnation is the group's start count (see Member.Incarnation):
	// the ranks of one running group all carry the same.
	Incarnation int `json:"incarnation,omitempty"`
}

// Validate reports the first bad field by its JSON name.
func (r Registration) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("cluster: registration field %s: %s", field, fmt.Sprintf(format, args...))
	}
	switch {
	case !r.Role.Valid():
		return bad("role", "unknown role %q (want %s, %s or %s)", r.Role, RolePrefill, RoleDecode, RoleUnified)
	case r.Group == "" || strings.Contains(r.Group, "/"):
		// The group is one path element of the etcd key.
		return bad("group", "invalid group name %q (empty or contains '/')", r.Group)
	case r.TP < 1:
		return bad("tp", "%d ranks (want at least 1)", r.TP)
	case r.Rank < 0 || r.Rank >= r.TP:
		return bad("rank", "rank %d outside a group of %d", r.Rank, r.TP)
	case r.Addr == "":
		return bad("addr", "empty")
	case r.Model == "":
		return bad("model", "empty")
	case r.KVBlocks < 0:
		return bad("kv_blocks", "negative (%d)", r.KVBlocks)
	case r.KVBlockSize < 1:
		return bad("kv_block_size", "%d (want at least 1)", r.KVBlockSize)
	case r.Incarnation < 0:
		return bad("incarnation", "negative (%d)", r.Incarnation)
	}
	return nil
}

// Registered is a live registration; it keeps its lease alive until
// Close, through etcd outages, and ends (Lost) only when the rank is gone
// for good.
type Registered struct {
	cli  *clientv3.Client
	key  string
	val  string
	ttl  int64 // seconds
	stop context.CancelFunc
	lost chan struct{}
	err  error // why lost closed; written before it closes

	mu        sync.Mutex
	lease     clientv3.LeaseID
	available bool
	why       error         // why etcd is unavailable
	changed   chan struct{} // closed and replaced when available changes

	closeOnce sync.Once
	closeErr  error
}

// Register validates r, grants a lease of ttl (DefaultMemberTTL when 0;
// the lease is what makes a crashed worker disappear), puts r under
// KeyPrefix+"members/<group>/<rank>" with that lease, and keeps the lease
// alive in the background. A (group, rank) already present returns an
// error wrapping ErrRankTaken. The keepalive outlives ctx, which bounds
// only the registration itself.
//
// The registration holds its rank until Close. When etcd cannot be
// reached it is not given up: the worker serves on (Available reports
// false meanwhile), and once etcd answers again the lease is kept alive
// again, or, if the entry went away meanwhile (its lease expired during
// the outage or while the worker was stopped, or was revoked), the entry
// is put back under a new lease. Lost is closed only when another
// registration took the rank meanwhile, when the client is closed, and
// after Close.
func Register(ctx context.Context, cli *clientv3.Client, r Registration, ttl time.Duration) (*Registered, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if ttl == 0 {
		ttl = DefaultMemberTTL
	}
	if ttl < 0 {
		return nil, fmt.Errorf("cluster: negative lease TTL %v", ttl)
	}
	val, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("cluster: encoding registration: %w", err)
	}
	reg := &Registered{
		cli: cli, key: memberKey(r.Group, r.Rank), val: string(val),
		// etcd leases count whole seconds; round up so the TTL is never
		// shorter than asked.
		ttl:  int64((ttl + time.Second - 1) / time.Second),
		lost: make(chan struct{}), available: true, changed: make(chan struct{}),
	}
	lease, err := reg.put(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: registering %s rank %d: %w", r.Group, r.Rank, err)
	}
	reg.lease = lease
	kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	reg.stop = stop
	go reg.keep(kctx)
	return reg, nil
}

// put grants a lease and puts the entry under it if the key is absent, so
// that two processes cannot both believe they hold the same rank.
func (r *Registered) put(ctx context.Context) (clientv3.LeaseID, error) {
	grant, err := r.cli.Grant(ctx, r.ttl)
	if err != nil {
		return 0, fmt.Errorf("lease: %w", err)
	}
	txn, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)).
		Then(clientv3.OpPut(r.key, r.val, clientv3.WithLease(grant.ID))).
		Commit()
	if err != nil {
		revokeQuietly(r.cli, grant.ID)
		return 0, err
	}
	if !txn.Succeeded {
		revokeQuietly(r.cli, grant.ID)
		return 0, ErrRankTaken
	}
	return grant.ID, nil
}

// keep keeps the lease alive until ctx ends or the rank is gone for good.
func (r *Registered) keep(ctx context.Context) {
	defer close(r.lost)
	for ctx.Err() == nil {
		r.keepAlive(ctx)
		if ctx.Err() != nil {
			return
		}
		// The keepalive channel closed: the lease is gone (revoked,
		// expired) or could not be renewed before its deadline.
		if err := r.recover(ctx); err != nil {
			r.err = err
			return
		}
	}
}

// keepAlive keeps the lease alive until its keepalive stream closes,
// marking etcd unavailable while renewals go unanswered.
func (r *Registered) keepAlive(ctx context.Context) {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ka, err := r.cli.KeepAlive(kctx, r.Lease())
	if err != nil {
		r.setAvailable(false, err)
		return
	}
	ttl := time.Duration(r.ttl) * time.Second
	check := time.NewTicker(ttl / 3)
	defer check.Stop()
	last := time.Now()
	for {
		select {
		case _, ok := <-ka:
			if !ok {
				return
			}
			last = time.Now()
			r.setAvailable(true, nil)
		case <-check.C:
			// The client renews every ttl/3; two missed answers mean
			// etcd is out of reach.
			if since := time.Since(last); since > 2*ttl/3 {
				r.setAvailable(false, fmt.Errorf("no lease renewal answered for %v", since.Round(time.Millisecond)))
			}
		}
	}
}

// recoverTimeout bounds one call of recover's to etcd.
const recoverTimeout = 2 * time.Second

// recover restores the registration after its keepalive ended: once
// etcd answers, it renews the old lease if that survived (etcd extends
// leases when it elects a leader), or puts the entry back under a
// new lease if it is gone (expired during an outage or while the worker
// was stopped, or revoked). It returns ErrRankTaken when another
// registration has taken the rank meanwhile, ErrClientClosed when the
// client was closed, and nil otherwise (ctx ended: Close).
func (r *Registered) recover(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if r.cli.Ctx().Err() != nil {
			return ErrClientClosed // nothing can renew
		}
		cctx, cancel := context.WithTimeout(ctx, recoverTimeout)
		// A renewal rather than TimeToLive tells whether the lease lives:
		// TimeToLive truncates to whole seconds, so a live lease with
		// under a second left reads as 0, and an expired one still being
		// revoked reads the same; a renewal of the latter waits for the
		// revocation (which deletes the entry) and answers not found.
		_, err := r.cli.KeepAliveOnce(cctx, r.Lease())
		if err == nil {
			cancel()
			return nil
		}
		if leaseGone(err) {
			var lease clientv3.LeaseID
			lease, err = r.put(cctx)
			if err == nil {
				r.mu.Lock()
				r.lease = lease
				r.mu.Unlock()
			}
		}
		cancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrRankTaken):
			r.setAvailable(true, nil)
			return ErrRankTaken
		}
		r.setAvailable(false, err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	return nil
}

func (r *Registered) setAvailable(ok bool, why error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok {
		why = nil
	}
	r.why = why
	if r.available != ok {
		r.available = ok
		close(r.changed)
		r.changed = make(chan struct{})
	}
}

// Available reports whether etcd answers the registration's renewals,
// and if not, why; changed is closed at the next change.
func (r *Registered) Available() (ok bool, changed <-chan struct{}, why error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.available, r.changed, r.why
}

// revokeQuietly undoes a grant on an error path; the lease expires anyway
// if this fails.
func revokeQuietly(cli *clientv3.Client, id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = cli.Revoke(ctx, id)
}

// Lease is the lease the entry is attached to now (a new one after the
// entry was put back following an etcd outage); other keys of the worker
// can share it.
func (r *Registered) Lease() clientv3.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

// Lost is closed when the rank is gone for good: another registration
// took it, or the client was closed; and after Close. Err says which.
func (r *Registered) Lost() <-chan struct{} { return r.lost }

// Err is why Lost closed: ErrRankTaken (another process registered the
// rank), ErrClientClosed, or nil when Close ended the registration (a
// normal stop) or Lost is still open.
func (r *Registered) Err() error {
	select {
	case <-r.lost:
		return r.err
	default:
		return nil
	}
}

// Close revokes the lease, so the entry disappears at once rather than
// after the TTL, and stops the keepalive. Idempotent; later calls return
// the first call's error.
func (r *Registered) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		r.stop()
		<-r.lost
		if r.cli.Ctx().Err() != nil {
			// A closed client would retry the revoke until ctx ends.
			r.closeErr = errors.New("cluster: client closed before Close; the entry stays until its lease expires")
			return
		}
		_, err := r.cli.Revoke(ctx, r.Lease())
		if err != nil && !leaseGone(err) {
			r.closeErr = fmt.Errorf("cluster: revoking lease %x: %w", int64(r.Lease()), err)
		}
	})
	return r.closeErr
}

// leaseGone reports whether a Revoke or a renewal failed because the
// lease is already gone (expired, or revoked elsewhere).
func leaseGone(err error) bool {
	var coded interface{ Code() codes.Code }
	return errors.As(err, &coded) && coded.Code() == codes.NotFound
}

// Group is one worker group as seen in etcd.
type Group struct {
	Name, Model string
	Role        Role
	TP          int
	// Incarnation is the reference rank's (see buildGroups); ranks of
	// another incarnation (a dead predecessor's leftovers) read as missing.
	Incarnation int
	// Ranks holds the registrations present, indexed by rank (len TP); a
	// missing rank is the zero Registration (Addr "").
	Ranks []Registration
}

// Ready reports whether every rank 0..TP-1 is registered with a role, TP,
// model and incarnation consistent with the group's.
func (g Group) Ready() bool {
	if g.TP < 1 || len(g.Ranks) != g.TP {
		return false
	}
	for i, r := range g.Ranks {
		if r.Addr == "" || r.Rank != i || !g.consistent(r) {
			return false
		}
	}
	return true
}

// consistent reports whether r belongs with the group's reference rank.
func (g Group) consistent(r Registration) bool {
	return r.Role == g.Role && r.TP == g.TP && r.Model == g.Model && r.Incarnation == g.Incarnation
}

// Missing lists the ranks not registered.
func (g Group) Missing() []int {
	var out []int
	for i := range g.TP {
		if i >= len(g.Ranks) || g.Ranks[i].Addr == "" {
			out = append(out, i)
		}
	}
	return out
}

// buildGroups turns the raw entries under membersPrefix into groups. Bad
// entries (unparsable, invalid, key and body disagreeing, or
// role/tp/model/incarnation disagreeing with the reference rank) are left out, so their rank reads
// as missing and the group as not ready, instead of failing the view.
func buildGroups(entries map[string][]byte) []Group {
	valid := map[string]map[int]Registration{}
	for key, val := range entries {
		name, rankStr, ok := strings.Cut(strings.TrimPrefix(key, membersPrefix), "/")
		if !ok || name == "" || strings.Contains(rankStr, "/") {
			continue
		}
		if valid[name] == nil {
			valid[name] = map[int]Registration{}
		}
		rank, err := strconv.Atoi(rankStr)
		if err != nil {
			continue
		}
		var r Registration
		if json.Unmarshal(val, &r) != nil || r.Validate() != nil || r.Group != name || r.Rank != rank {
			continue
		}
		valid[name][rank] = r
	}
	groups := make([]Group, 0, len(valid))
	for name, regs := range valid {
		g := Group{Name: name}
		// Rank 0 defines the group; without it, the lowest rank present
		// stands in so a partial group still shows its shape.
		if len(regs) > 0 {
			ref := regs[slices.Min(slices.Collect(maps.Keys(regs)))]
			g.Role, g.Model, g.TP, g.Incarnation = ref.Role, ref.Model, ref.TP, ref.Incarnation
			g.Ranks = make([]Registration, g.TP)
			for rank, r := range regs {
				if rank < g.TP && g.consistent(r) {
					g.Ranks[rank] = r
				}
			}
		}
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b Group) int { return strings.Compare(a.Name, b.Name) })
	return groups
}

// Membership is a live view of every group, kept current by an etcd watch.
type Membership struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	entries map[string][]byte // key → value under membersPrefix
	changed chan struct{}     // closed and replaced at each change
	stopped bool              // the watch has ended; the view is frozen
	// available is whether etcd answered the last probe; while it does
	// not, the view is frozen as it was.
	available   bool
	why         error
	cancelWatch context.CancelFunc // ends the current watch, for a reload
}

// probeInterval is how often a Membership checks that etcd answers; a
// watch alone does not tell (the client resumes it silently), and the
// view must be known to be frozen.
const probeInterval = time.Second

// probeTimeout bounds one probe and one reload.
const probeTimeout = 2 * time.Second

// WatchMembership loads every registration under KeyPrefix+"members/" and
// keeps watching, from the revision after the load so no event is missed,
// until ctx ends or Close. A compacted or broken watch is resumed by a
// fresh load. Bad entries are ignored (their rank reads as missing).
func WatchMembership(ctx context.Context, cli *clientv3.Client) (*Membership, error) {
	entries, rev, err := loadMembers(ctx, cli)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	m := &Membership{
		cli:       cli,
		cancel:    cancel,
		done:      make(chan struct{}),
		entries:   entries,
		changed:   make(chan struct{}),
		available: true,
	}
	m.start(wctx, rev)
	return m, nil
}

// start runs the watch from rev and the probe until ctx ends, then
// freezes the view and closes done.
func (m *Membership) start(ctx context.Context, rev int64) {
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		m.probe(ctx)
	}()
	go func() {
		m.run(ctx, rev)
		<-probed
		m.mu.Lock()
		m.stopped = true
		close(m.changed)
		m.mu.Unlock()
		close(m.done)
	}()
}

// probe checks every probeInterval that etcd answers. When it stops, the
// watch is ended, so that the state is read afresh once etcd answers
// again; after missesUnavailable probes in a row without an answer, the
// view is marked frozen (groups stay as they were). One missed probe is
// what a leader election under load costs (a member lost), not an outage.
func (m *Membership) probe(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err := m.cli.Get(pctx, membersPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			m.mu.Lock()
			if m.cancelWatch != nil {
				m.cancelWatch()
			}
			m.mu.Unlock()
			if misses++; misses < missesUnavailable {
				continue
			}
		}
		misses = 0
		m.setAvailable(err == nil, err)
	}
}

// missesUnavailable is how many probes in a row etcd must leave
// unanswered to be unavailable, as for a registration's renewals.
const missesUnavailable = 2

func (m *Membership) setAvailable(ok bool, why error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ok {
		why = nil
	}
	m.why = why
	if m.available != ok {
		m.available = ok
		m.signalLocked()
	}
}

// Available reports whether etcd answered one of the last two checks
// (one a second) and if not, why. While it does not, the view is frozen: the groups are
// those seen last. Changed is closed when this changes too.
func (m *Membership) Available() (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.available, m.why
}

func loadMembers(ctx context.Context, cli *clientv3.Client) (map[string][]byte, int64, error) {
	resp, err := cli.Get(ctx, membersPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: reading membership: %w", err)
	}
	entries := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		entries[string(kv.Key)] = kv.Value
	}
	return entries, resp.Header.Revision, nil
}

func (m *Membership) run(ctx context.Context, rev int64) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		m.watch(ctx, rev)
		// The watch ended while ctx is live (compaction, lost leader,
		// closed channel, etcd out of reach): reload the whole state,
		// since events in the gap are gone, and resume from there.
		for ctx.Err() == nil {
			lctx, cancel := context.WithTimeout(ctx, probeTimeout)
			entries, r, err := loadMembers(lctx, m.cli)
			cancel()
			if err == nil {
				m.replace(entries)
				m.setAvailable(true, nil)
				rev, backoff = r, 50*time.Millisecond
				break
			}
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}
}

// watch applies events after rev until the watch fails or ctx ends.
func (m *Membership) watch(ctx context.Context, rev int64) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.mu.Lock()
	m.cancelWatch = cancel
	m.mu.Unlock()
	// WithRequireLeader ends the watch when the member loses its leader,
	// instead of silently receiving nothing.
	wch := m.cli.Watch(clientv3.WithRequireLeader(wctx), membersPrefix,
		clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for wr := range wch {
		if wr.Err() != nil || wr.Canceled {
			return
		}
		m.mu.Lock()
		dirty := false
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			switch ev.Type {
			case clientv3.EventTypePut:
				m.entries[key] = ev.Kv.Value
				dirty = true
			case clientv3.EventTypeDelete:
				if _, ok := m.entries[key]; ok {
					delete(m.entries, key)
					dirty = true
				}
			}
		}
		if dirty {
			m.signalLocked()
		}
		m.mu.Unlock()
	}
}

func (m *Membership) replace(entries map[string][]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !maps.EqualFunc(m.entries, entries, bytes.Equal) {
		m.entries = entries
		m.signalLocked()
	}
}

func (m *Membership) signalLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Groups returns a snapshot of all groups (ready or not), sorted by name.
func (m *Membership) Groups() []Group {
	m.mu.Lock()
	defer m.mu.Unlock()
	return buildGroups(m.entries)
}

// Group returns a snapshot of the named group, and whether any entry of
// it is present.
func (m *Membership) Group(name string) (Group, bool) {
	for _, g := range m.Groups() {
		if g.Name == name {
			return g, true
		}
	}
	return Group{}, false
}

// Changed returns a channel that is closed at the next change after the
// call; callers re-call it after each change. Once the watch has ended
// (ctx or Close) the view no longer changes and Changed returns a closed
// channel, so waiters wake up rather than hang.
func (m *Membership) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// WaitReady blocks until the named group is ready or ctx ends; the error
// on ctx end wraps ErrIncomplete and ctx's error and names the missing
// ranks.
func (m *Membership) WaitReady(ctx context.Context, group string) (Group, error) {
	for {
		ch := m.Changed()
		g, ok := m.Group(group)
		if g.Ready() {
			return g, nil
		}
		m.mu.Lock()
		stopped := m.stopped
		m.mu.Unlock()
		if stopped {
			return g, waitErr(group, g, ok, errors.New("cluster: membership watch stopped"))
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return g, waitErr(group, g, ok, ctx.Err())
		}
	}
}

func waitErr(name string, g Group, present bool, cause error) error {
	if !present || g.TP < 1 {
		return fmt.Errorf("%w: group %s has no valid registrations: %w", ErrIncomplete, name, cause)
	}
	miss := g.Missing()
	ranks := make([]string, len(miss))
	for i, r := range miss {
		ranks[i] = strconv.Itoa(r)
	}
	return fmt.Errorf("%w: group %s has %d of %d ranks; missing rank(s) %s: %w",
		ErrIncomplete, g.Name, g.TP-len(miss), g.TP, strings.Join(ranks, ", "), cause)
}

// Close stops the watch and waits for it to end. Idempotent.
func (m *Membership) Close() {
	m.cancel()
	<-m.done
}
