package tracing

import (
	"testing"
	"time"
)

// exchange builds a sample for a server whose clock is behind the
// client's by offset, reached with the given delays each way, sent at
// client time t0 (Unix nanoseconds).
func exchange(t0 int64, offset, up, down time.Duration) ClockSample {
	sent := time.Unix(0, t0)
	at := sent.Add(up) // when the server answered, client clock
	return ClockSample{Sent: sent, Received: at.Add(down), Server: at.UnixNano() - int64(offset)}
}

func TestEstimateClock(t *testing.T) {
	const t0 = 1_700_000_000_000_000_000
	const offset = 3*time.Millisecond + 217*time.Nanosecond
	tests := []struct {
		name      string
		samples   []ClockSample
		truth     time.Duration // the offset the samples were made with
		exact     bool          // the estimate must be exactly truth
		best      int           // the sample it must choose
		wantError time.Duration // the bound it must report
		wantN     int
	}{
		{
			name:      "symmetric",
			samples:   []ClockSample{exchange(t0, offset, 40*time.Microsecond, 40*time.Microsecond)},
			exact:     true,
			wantError: 41 * time.Microsecond,
			wantN:     1,
		},
		{
			name:      "negative offset",
			samples:   []ClockSample{exchange(t0, -offset, 10*time.Microsecond, 10*time.Microsecond)},
			truth:     -offset,
			exact:     true,
			wantError: 11 * time.Microsecond,
			wantN:     1,
		},
		{
			name:      "asymmetric",
			samples:   []ClockSample{exchange(t0, offset, 10*time.Microsecond, 290*time.Microsecond)},
			wantError: 151 * time.Microsecond,
			wantN:     1,
		},
		{
			name:      "all the way one direction",
			samples:   []ClockSample{exchange(t0, offset, 0, 100*time.Microsecond)},
			wantError: 51 * time.Microsecond,
			wantN:     1,
		},
		{
			name: "smallest round trip wins",
			samples: []ClockSample{
				exchange(t0, offset, 900*time.Microsecond, 100*time.Microsecond),
				exchange(t0+1e6, offset, 20*time.Microsecond, 20*time.Microsecond),
				exchange(t0+2e6, offset, 100*time.Microsecond, 5*time.Millisecond),
			},
			exact:     true,
			best:      1,
			wantError: 21 * time.Microsecond,
			wantN:     3,
		},
		{
			name: "backwards sample skipped",
			samples: []ClockSample{
				{Sent: time.Unix(0, t0+10), Received: time.Unix(0, t0), Server: 0},
				exchange(t0, offset, 30*time.Microsecond, 30*time.Microsecond),
			},
			exact:     true,
			best:      1,
			wantError: 31 * time.Microsecond,
			wantN:     1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := EstimateClock(tt.samples)
			if err != nil {
				t.Fatal(err)
			}
			truth := tt.truth
			if truth == 0 {
				truth = offset
			}
			if tt.exact && e.Offset != truth {
				t.Errorf("Offset = %v, want exactly %v", e.Offset, truth)
			}
			if d := (e.Offset - truth).Abs(); d > e.Error {
				t.Errorf("Offset = %v, %v from the truth %v, beyond the bound %v", e.Offset, d, truth, e.Error)
			}
			if e.Error != tt.wantError {
				t.Errorf("Error = %v, want %v", e.Error, tt.wantError)
			}
			if e.Samples != tt.wantN {
				t.Errorf("Samples = %d, want %d", e.Samples, tt.wantN)
			}
			if best := tt.samples[tt.best]; !e.At.Equal(best.Received) {
				t.Errorf("At = %v, want sample %d's Received %v", e.At, tt.best, best.Received)
			}
			// A server timestamp converts to the client time it was taken at
			// (exactly, when the delays were symmetric).
			if best := tt.samples[tt.best]; tt.exact {
				mid := best.Sent.Add(best.Received.Sub(best.Sent) / 2).UnixNano()
				if got := e.ToClient(best.Server); got != mid {
					t.Errorf("ToClient(%d) = %d, want %d", best.Server, got, mid)
				}
			}
		})
	}
}

func TestEstimateClockErrors(t *testing.T) {
	now := time.Unix(0, 1_700_000_000_000_000_000)
	tests := []struct {
		name    string
		samples []ClockSample
	}{
		{"empty", nil},
		{"only backwards", []ClockSample{{Sent: now.Add(time.Millisecond), Received: now}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if e, err := EstimateClock(tt.samples); err == nil {
				t.Fatalf("EstimateClock = %+v, want an error", e)
			}
		})
	}
}
