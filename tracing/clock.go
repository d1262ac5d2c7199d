package tracing

import (
	"errors"
	"fmt"
	"time"
)

// ServerResolution is the uncertainty added for the server's own
// timestamp: it is read once, at some moment while it answered.
const ServerResolution = time.Microsecond

// ClockSample is one exchange: the client's send and receive times and
// the server's reported time (one timestamp, taken when it answered).
type ClockSample struct {
	Sent, Received time.Time
	Server         int64 // Unix nanoseconds in the server's clock
}

// ClockEstimate is how a server's clock relates to the client's: add
// Offset to the server's times to get client time. The true offset lies
// within ±Error of it.
type ClockEstimate struct {
	Offset, Error time.Duration
	// Samples is the number of valid exchanges it was chosen from.
	Samples int
	// At is when the chosen exchange ended, in the client's clock.
	At time.Time
}

// ToClient converts a server time (Unix nanoseconds) to client time.
func (e ClockEstimate) ToClient(serverUnixNanos int64) int64 {
	return serverUnixNanos + int64(e.Offset)
}

// EstimateClock estimates a server's clock offset NTP-style. It takes the
// sample with the smallest round trip (the usual NTP filter: the shortest
// exchange is the least disturbed by queueing) and assumes the server
// read its clock halfway through it, so offset = (Sent+Received)/2 −
// Server. Whatever the split of the round trip between the two
// directions, the true offset is within half the round trip of that, plus
// ServerResolution. Samples whose Received is before Sent are skipped.
func EstimateClock(samples []ClockSample) (ClockEstimate, error) {
	best, valid := -1, 0
	var bestRTT time.Duration
	for i, s := range samples {
		rtt := s.Received.Sub(s.Sent) // monotonic when both readings have it
		if rtt < 0 {
			continue
		}
		valid++
		if best < 0 || rtt < bestRTT {
			best, bestRTT = i, rtt
		}
	}
	if best < 0 {
		if len(samples) == 0 {
			return ClockEstimate{}, errors.New("tracing: estimate clock: no samples")
		}
		return ClockEstimate{}, fmt.Errorf("tracing: estimate clock: none of %d samples has Received after Sent", len(samples))
	}
	s := samples[best]
	mid := s.Sent.UnixNano() + int64(bestRTT/2)
	return ClockEstimate{
		Offset:  time.Duration(mid - s.Server),
		Error:   bestRTT/2 + bestRTT%2 + ServerResolution,
		Samples: valid,
		At:      s.Received,
	}, nil
}
