package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"

	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/worker/supervisor"
)

// Kind is a kind of fault.
type Kind string

// The kinds of fault (see the package documentation).
const (
	KillRank          Kind = "kill-rank"
	KillPrefillLeader Kind = "kill-prefill-leader"
	KillCoordinator   Kind = "kill-coordinator"
	KillEtcdMember    Kind = "kill-etcd-member"
	KVCorrupt         Kind = "kv-corrupt"
	KVDrop            Kind = "kv-drop"
	KVDelay           Kind = "kv-delay"
	PauseRank         Kind = "pause-rank"
)

// AllKinds lists every kind of fault, in the order a schedule cycles
// through them.
func AllKinds() []Kind {
	return []Kind{KillRank, KVCorrupt, KillCoordinator, KVDrop, KillPrefillLeader, KVDelay, PauseRank, KillEtcdMember}
}

// kvFrames is how many KV frames a kv-* fault damages.
const kvFrames = 3

// FaultRecord is one fault of a run and the recovery after it.
type FaultRecord struct {
	Kind   Kind      `json:"kind"`
	Target string    `json:"target"`
	At     time.Time `json:"at"`
	// RecoverySeconds is the time from the fault to a cluster serving
	// every group again (a probe answered in full); Recovered is false
	// when that did not happen within Options.RecoveryTimeout.
	RecoverySeconds float64 `json:"recovery_seconds"`
	Recovered       bool    `json:"recovered"`
	Error           string  `json:"error,omitempty"`
}

// window is a span of time; an open one (a fault never recovered from)
// has a zero end and lasts to the end of the run.
type window struct{ from, to time.Time }

func (w window) overlaps(start, end time.Time) bool {
	return !end.Before(w.from) && (w.to.IsZero() || !start.After(w.to))
}

// outage is the time from the fault until the cluster served again: a
// request overlapping it may fail because of the fault, even one that
// began after the kill and failed before any look saw the coordinator
// down.
func (f FaultRecord) outage() window {
	w := window{from: f.At}
	if f.Recovered {
		w.to = f.At.Add(time.Duration(f.RecoverySeconds * float64(time.Second)))
	}
	return w
}

// injected is a fault in progress: seen reports once the cluster has
// noticed it (the group restarted, the frames were hit), so recovery is
// not measured before it began; undo ends it where it needs ending.
type injected struct {
	target string
	seen   func() bool
	undo   func()
}

// inject starts a fault of kind k.
func (s *system) inject(k Kind, rng *rand.Rand) (injected, error) {
	switch k {
	case KillRank:
		g := s.groups[rng.IntN(len(s.groups))]
		in, err := s.signalRank(g.name, rng.IntN(g.tp), syscall.SIGKILL)
		return in.injected, err
	case KillPrefillLeader:
		var pre []group
		for _, g := range s.groups {
			if g.role == cluster.RolePrefill {
				pre = append(pre, g)
			}
		}
		if len(pre) == 0 {
			return injected{}, errors.New("no prefill group")
		}
		in, err := s.signalRank(pre[rng.IntN(len(pre))].name, 0, syscall.SIGKILL)
		return in.injected, err
	case KillCoordinator:
		in, err := signal(s.coord, "coordinator", 0, syscall.SIGKILL)
		return in.injected, err
	case KillEtcdMember:
		// The leader: its loss is the one that makes the others elect.
		i := max(s.etcd.Leader(), 0)
		if err := s.etcd.StopMember(i); err != nil {
			return injected{}, err
		}
		return injected{target: fmt.Sprintf("etcd member %d of %d (the leader)", i, s.etcd.Members())}, nil
	case KVCorrupt, KVDrop, KVDelay:
		kind := map[Kind]kvFault{KVCorrupt: kvCorrupt, KVDrop: kvDrop, KVDelay: kvDelay}[k]
		hit := s.faults.arm(kind, kvFrames)
		return injected{target: fmt.Sprintf("the next %d KV frames", kvFrames), seen: closed(hit)}, nil
	case PauseRank:
		g := s.groups[rng.IntN(len(s.groups))]
		in, err := s.signalRank(g.name, rng.IntN(g.tp), syscall.SIGSTOP)
		if err != nil {
			return in.injected, err
		}
		pid := in.pid
		in.undo = func() { _ = syscall.Kill(pid, syscall.SIGCONT) }
		return in.injected, nil
	}
	return injected{}, fmt.Errorf("unknown fault kind %q", k)
}

// signalled is a signal sent to a rank's process.
type signalled struct {
	injected
	pid int
}

func (s *system) signalRank(group string, rank int, sig syscall.Signal) (signalled, error) {
	return signal(s.workers, group, rank, sig)
}

// signal sends sig to a rank of a group sup runs; the fault is seen once
// the group has been restarted (a paused rank's lapsed registration
// restarts it too).
func signal(sup *supervisor.Supervisor, group string, rank int, sig syscall.Signal) (signalled, error) {
	st, ok := sup.Status(group)
	i := slices.Index(st.Ranks, rank)
	if !ok || i < 0 || i >= len(st.PIDs) {
		return signalled{}, fmt.Errorf("%s rank %d is not running", group, rank)
	}
	pid := st.PIDs[i]
	if err := syscall.Kill(pid, sig); err != nil {
		return signalled{}, fmt.Errorf("signalling %s rank %d (pid %d): %w", group, rank, pid, err)
	}
	seen := func() bool {
		now, _ := sup.Status(group)
		return now.Restarts > st.Restarts
	}
	return signalled{injected: injected{target: fmt.Sprintf("%s rank %d (pid %d)", group, rank, pid), seen: seen}, pid: pid}, nil
}

// closed makes a channel's closing a seen function.
func closed(ch <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}

// recover waits until the fault was seen, then until the cluster is
// healthy and a probe request is answered with all its tokens; it
// returns the time since the fault began.
func (s *system) recover(ctx context.Context, began time.Time, in injected, probe bench.Target) (time.Duration, error) {
	ctx, cancel := context.WithDeadline(ctx, began.Add(s.opts.RecoveryTimeout))
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for in.seen != nil && !in.seen() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return time.Since(began), fmt.Errorf("the fault was not noticed within %v", s.opts.RecoveryTimeout)
		}
	}
	for {
		if s.healthy(ctx) {
			pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
			out := probe.Send(pctx, bench.Request{ID: fmt.Sprintf("chaos-probe-%d", time.Now().UnixNano()), Prompt: "probe", PromptLen: 1, MaxTokens: 4, IgnoreEOS: true})
			pcancel()
			if out.Success && out.OutputTokens == 4 {
				return time.Since(began), nil
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return time.Since(began), fmt.Errorf("not serving every group again within %v", s.opts.RecoveryTimeout)
		}
	}
}
