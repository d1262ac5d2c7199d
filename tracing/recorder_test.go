package tracing

import (
	"fmt"
	"sync"
	"testing"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// batchIDs are request ids made once, as the engine's records hold them:
// recording stores the same string values and allocates nothing for them.
var batchIDs = func() []string {
	ids := make([]string, 8)
	for i := range ids {
		ids[i] = fmt.Sprintf("req-%d", i)
	}
	return ids
}()

// fillTypical records a decode step of 8 sequences with 24 collectives
// (a 12-layer model's two allreduces per layer) and op times, as a rank 0
// collecting detailed traces would.
func fillTypical(step uint64) func(s *tandemv1.StepTrace) {
	return func(s *tandemv1.StepTrace) {
		s.Step = step
		s.StartUnixNanos = int64(step) * 1000
		s.ScheduleNanos, s.ComputeNanos, s.SampleNanos, s.QueueNanos = 10, 200, 20, 5
		s.DecodeTokens = int32(len(batchIDs))
		s.FreeBlocks = 100
		for i, id := range batchIDs {
			q := AddSeq(s)
			q.RequestId, q.Position, q.Tokens, q.Sampled = id, int32(i), 1, true
		}
		for i := range 24 {
			c := AddCollective(s)
			c.Kind, c.Bytes, c.DurationNanos, c.OffsetNanos = "allreduce", 8*768*2, 3, int64(i)*8
		}
		for i, op := range []string{"norm", "q_proj", "attention", "lm_head"} {
			o := AddOp(s)
			o.Op, o.Nanos = op, int64(i+1)*10
		}
		g := GPU(s)
		g.UtilizationPercent, g.MemoryUsedBytes = 90, 1<<30
	}
}

func TestRecordAllocatesNothingAfterWarmUp(t *testing.T) {
	r := NewRecorder(16)
	for i := range 32 { // wrap the ring twice so every slot has grown
		r.Record(fillTypical(uint64(i)))
	}
	fills := make([]func(*tandemv1.StepTrace), 64)
	for i := range fills {
		fills[i] = fillTypical(uint64(100 + i))
	}
	i := 0
	allocs := testing.AllocsPerRun(50, func() {
		r.Record(fills[i%len(fills)])
		i++
	})
	if allocs != 0 {
		t.Fatalf("Record allocated %v times per call after warm-up, want 0", allocs)
	}
}

func BenchmarkRecord(b *testing.B) {
	r := NewRecorder(1024)
	fill := fillTypical(1)
	for range 2048 {
		r.Record(fill)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.Record(fill)
	}
}

func TestRecorderSteps(t *testing.T) {
	r := NewRecorder(4)
	// Steps 1..6 into a ring of 4: 1 and 2 are evicted. Request "a" runs in
	// steps 2..5, "b" in 5 and 6.
	batches := map[uint64][]string{1: nil, 2: {"a"}, 3: {"a"}, 4: {"a"}, 5: {"a", "b"}, 6: {"b"}}
	for step := uint64(1); step <= 6; step++ {
		r.Record(func(s *tandemv1.StepTrace) {
			s.Step = step
			for _, id := range batches[step] {
				AddSeq(s).RequestId = id
			}
			AddCollective(s).Kind = "allreduce"
		})
	}
	tests := []struct {
		name string
		req  string
		ids  []uint64
		want []uint64
	}{
		{"by request", "a", nil, []uint64{3, 4, 5}},
		{"other request", "b", nil, []uint64{5, 6}},
		{"by ids", "", []uint64{6, 3, 99}, []uint64{3, 6}},
		{"evicted id", "", []uint64{1, 2}, nil},
		{"request or ids", "b", []uint64{3}, []uint64{3, 5, 6}},
		{"unknown", "zzz", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.Steps(tt.req, tt.ids)
			var ids []uint64
			for _, s := range got {
				ids = append(ids, s.GetStep())
			}
			if fmt.Sprint(ids) != fmt.Sprint(tt.want) {
				t.Fatalf("Steps(%q, %v) = steps %v, want %v", tt.req, tt.ids, ids, tt.want)
			}
		})
	}
}

func TestRecorderStepsAreCopies(t *testing.T) {
	r := NewRecorder(2)
	r.Record(func(s *tandemv1.StepTrace) {
		s.Step = 1
		q := AddSeq(s)
		q.RequestId, q.Tokens = "a", 7
	})
	got := r.Steps("a", nil)
	// Overwrite the slot twice so the ring reuses the record's messages.
	for step := uint64(2); step <= 3; step++ {
		r.Record(func(s *tandemv1.StepTrace) {
			s.Step = step
			q := AddSeq(s)
			q.RequestId, q.Tokens = "x", 1
		})
	}
	if len(got) != 1 || got[0].GetStep() != 1 || got[0].GetSeqs()[0].GetRequestId() != "a" || got[0].GetSeqs()[0].GetTokens() != 7 {
		t.Fatalf("the copy changed when the ring reused its slot: %v", got)
	}
}

func TestRecordResetsReusedSlot(t *testing.T) {
	r := NewRecorder(1)
	r.Record(func(s *tandemv1.StepTrace) {
		s.Step, s.ComputeNanos = 1, 50
		q := AddSeq(s)
		q.RequestId, q.Prefill, q.Tokens = "a", true, 9
		AddSeq(s).RequestId = "b"
		AddCollective(s).Bytes = 10
		AddOp(s).Nanos = 7
		GPU(s).PowerWatts = 300
	})
	r.Record(func(s *tandemv1.StepTrace) {
		if s.GetStep() != 0 || s.GetComputeNanos() != 0 || len(s.GetSeqs()) != 0 || len(s.GetCollectives()) != 0 || len(s.GetOps()) != 0 {
			t.Errorf("slot not reset: %v", s)
		}
		if o := AddOp(s); o.GetNanos() != 0 || o.GetOp() != "" {
			t.Errorf("reused op not zeroed: %v", o)
		}
		if s.GetGpu().GetPowerWatts() != 0 {
			t.Errorf("GPU counters not zeroed: %v", s.GetGpu())
		}
		s.Step = 2
		q := AddSeq(s) // reuses "a"'s message, which must come back zeroed
		if q.GetPrefill() || q.GetTokens() != 0 || q.GetRequestId() != "" {
			t.Errorf("reused seq not zeroed: %v", q)
		}
		q.RequestId = "c"
		s.Gpu = nil
	})
	got := r.Steps("c", nil)
	if len(got) != 1 || len(got[0].GetSeqs()) != 1 || got[0].GetGpu() != nil {
		t.Fatalf("Steps = %v, want step 2 with one seq and no GPU counters", got)
	}
}

func TestRecorderKV(t *testing.T) {
	r := NewRecorder(1) // 4 KV records
	for i := range 6 {
		id := "a"
		if i%2 == 1 {
			id = "b"
		}
		r.RecordKV(id, &tandemv1.KVTransferTrace{Layer: int32(i), SourceRank: 1, DestRank: 2, Bytes: 100, StartUnixNanos: int64(i), DurationNanos: 7})
	}
	// Records 0 and 1 are evicted: "a" keeps layers 2 and 4, "b" 3 and 5.
	for id, want := range map[string][]int32{"a": {2, 4}, "b": {3, 5}, "c": nil} {
		var layers []int32
		for _, kv := range r.KV(id) {
			if kv.GetSourceRank() != 1 || kv.GetDestRank() != 2 || kv.GetBytes() != 100 || kv.GetDurationNanos() != 7 || kv.GetStartUnixNanos() != int64(kv.GetLayer()) {
				t.Errorf("KV(%q) record %v lost a field", id, kv)
			}
			layers = append(layers, kv.GetLayer())
		}
		if fmt.Sprint(layers) != fmt.Sprint(want) {
			t.Errorf("KV(%q) layers = %v, want %v", id, layers, want)
		}
	}
}

func TestNewRecorderDefaultCapacity(t *testing.T) {
	for _, c := range []int{0, -3} {
		if r := NewRecorder(c); len(r.steps) != DefaultCapacity || len(r.kv) != 4*DefaultCapacity {
			t.Errorf("NewRecorder(%d): %d steps, %d KV records", c, len(r.steps), len(r.kv))
		}
	}
}

// TestRecorderConcurrent is for the race detector: the step loop records
// while handlers read.
func TestRecorderConcurrent(t *testing.T) {
	r := NewRecorder(64)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 2000 {
			r.Record(fillTypical(uint64(i)))
			r.RecordKV("req-1", &tandemv1.KVTransferTrace{Layer: int32(i)})
		}
	})
	for range 4 {
		wg.Go(func() {
			for range 200 {
				for _, s := range r.Steps("req-3", []uint64{5}) {
					if len(s.GetSeqs()) != len(batchIDs) {
						t.Errorf("step %d has %d seqs, want %d", s.GetStep(), len(s.GetSeqs()), len(batchIDs))
						return
					}
				}
				r.KV("req-1")
			}
		})
	}
	wg.Wait()
}
