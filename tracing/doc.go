// Package tracing is Tandem's per-token flight recorder: what each rank
// records about its steps, how the clocks of different nodes are put on
// one time axis, how a request's output tokens are attributed to what the
// cluster did, and the views of a request's trace (a terminal table and
// timeline, Chrome trace JSON for ui.perfetto.dev, and WriteSVG's
// swimlanes). The trace data model is proto/tandem/v1/trace.proto.
//
// # Flight recorder
//
// Every rank keeps a Recorder: a bounded ring (DefaultCapacity steps) of
// StepTrace records, and a ring four times as long of KV transfer records
// (one per layer and rank pair of a request). Record hands the step loop
// the next slot to fill in place; the slot's slices keep their capacity
// and AddSeq, AddCollective and GPU reuse the messages a previous record
// left there, so once the ring has wrapped and the slices have grown to
// the usual batch, recording allocates nothing (request ids are the
// engine's own strings, not copies). Readers get deep copies: Steps by
// request id (rank 0, which records the batch composition) or by step id
// (the other ranks, which record only the batch's shape), KV by request.
// A request older than the ring's reach has no steps left; the
// coordinator reports what it gets.
//
// # Clock alignment
//
// The coordinator puts each rank's times on its own clock with an
// NTP-style exchange: it notes when it sent a request and when the answer
// came, the rank answers with one reading of its clock, and EstimateClock
// takes the exchange with the smallest round trip and assumes the reading
// was taken halfway. The true offset is then within half that round trip
// (plus the reading's resolution) of the estimate, and every time of the
// rank is known to ± that bound (RankTrace.clock_error_nanos).
//
// # Attribution
//
// Breakdown splits each output token's ITL (coordinator receive time
// minus the previous token's; for the first token minus the arrival, so
// TTFT) by what the rank-0 lane of the token's group recorded: the token
// comes from step TokenTrace.step of that lane, and the token's window is
// the lane's time up to that step's end, converted to coordinator time
// with the lane's clock offset. The window begins
//
//   - at the end of the previous token's step when that token came from
//     the same lane (decode after decode): both ends are on one clock, so
//     the offset cancels;
//   - at the arrival for the first token (prefill or unified group): its
//     Queue thus includes tokenizing, routing and the RPC to the group;
//   - when the coordinator received the previous token for the first token
//     of a group continuing another's request (the first decode token):
//     the decode group could not start before.
//
// Each step of the lane in the window that held the request (ids after the
// previous token's step, up to this token's) adds its compute less its
// allreduce calls to Compute, the allreduce calls to Allreduce (count and
// bytes too; broadcasts of the plan and allgathers of the logits stay in
// Compute), its sampling to Sampling and its scheduling to Queue. For the
// first token of a continuing group, KVTransfer is the span from the
// earliest start to the latest end of the KV loads that the group's ranks
// recorded (or, when they recorded none, the sends of the previous
// token's group), clipped to the window. The rest of the window is Queue: the
// steps' waits, steps the lane ran without the request, and the
// transfers between groups; it is never made negative.
//
// Other is ITL minus all of those: the part of the ITL that the lane's
// window does not explain. For a token after one of the same lane it is
// the difference between the two tokens' delivery delays from rank 0 to
// the coordinator (so jitter makes it negative by as much as a delivery
// was slower than the next); for a window that starts in coordinator time
// it is the token's delivery delay, off by up to ErrorBound, the clock
// error of the ranks involved, so a fast network can make it negative by
// up to ErrorBound. A token whose lane or step is missing from the trace
// has all its ITL in Other.
//
// Summarize computes the summary row of profiling write-ups (prompt
// length, tokenize, TTFT, steady time from the first token to the last,
// ms/token over the tokens after the first, tok/s, and the largest peak
// resident set the serving ranks reported).
package tracing
