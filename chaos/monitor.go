package chaos

import (
	"context"
	"sort"
	"sync"
	"time"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// sample is one look at the coordinator's Health.
type sample struct {
	at time.Time
	// up: the coordinator answered; servable: it had a ready group of
	// every role it needs.
	up, servable bool
}

// monitor records the coordinator's view of the cluster every interval,
// so that a failed request can be judged by what was there when it
// failed.
type monitor struct {
	health tandemv1.GenerationClient
	mu     sync.Mutex
	log    []sample
}

func (m *monitor) run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		hctx, cancel := context.WithTimeout(ctx, every)
		h, err := m.health.Health(hctx, &tandemv1.HealthRequest{})
		cancel()
		s := sample{at: time.Now(), up: err == nil,
			servable: err == nil && h.GetStatus() == tandemv1.ServingStatus_SERVING_STATUS_SERVING}
		m.mu.Lock()
		m.log = append(m.log, s)
		m.mu.Unlock()
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// judge says, for a request that ran from start to end, whether the
// coordinator was down at some moment of it (it did not answer, or the
// request overlapped the outage of a coordinator kill), and whether the cluster was
// servable at its end (the last look before end).
func (m *monitor) judge(start, end time.Time, outages []window) (coordDown, servableAtEnd bool) {
	for _, w := range outages {
		if w.overlaps(start, end) {
			coordDown = true
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	i := sort.Search(len(m.log), func(i int) bool { return !m.log[i].at.Before(start) })
	for ; i < len(m.log) && !m.log[i].at.After(end); i++ {
		if !m.log[i].up {
			coordDown = true
		}
	}
	// The last look before the end stands for the moment it failed (a
	// request can start and fail between two looks).
	j := sort.Search(len(m.log), func(i int) bool { return m.log[i].at.After(end) }) - 1
	if j >= 0 {
		coordDown = coordDown || !m.log[j].up
		servableAtEnd = m.log[j].servable
	}
	return coordDown, servableAtEnd
}

// outages sums the time the coordinator did not answer, and the time it
// answered but could not serve the model (no ready group of some role),
// each look standing for the time until the next.
func (m *monitor) outages() (down, unservable time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 1; i < len(m.log); i++ {
		d := m.log[i].at.Sub(m.log[i-1].at)
		switch s := m.log[i-1]; {
		case !s.up:
			down += d
		case !s.servable:
			unservable += d
		}
	}
	return down, unservable
}
