package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/kvtransfer"
	"github.com/tandemllm/tandem/metrics"
	"github.com/tandemllm/tandem/parallel"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/tracing"
)

// rankServer moves this rank's share of requests' KV (the Rank service).
// It touches the engine only through ReadKV and WriteKV on blocks no step
// uses, so it runs beside Step and Follow.
type rankServer struct {
	tandemv1.UnimplementedRankServer
	e        *engine.Engine
	rank     int
	tp       int
	kvHeads  int            // the model's KV heads
	heads    parallel.Range // global KV heads this rank holds
	headDim  int
	layers   int
	dtype    tandemv1.DataType // the engine's KV cache dtype, as chunks carry it
	sender   *kvtransfer.Sender
	receiver *kvtransfer.Receiver // nil on prefill ranks
	rec      *tracing.Recorder
	metrics  *metrics.Worker
	node     string // host name, for traces

	// dropped remembers recently dropped requests, so a LoadKV that comes
	// after its request's KV was given up on fails at once instead of
	// waiting for KV that will never come.
	mu      sync.Mutex
	dropped map[string]time.Time
}

// droppedTTL is how long a dropped request is remembered.
const droppedTTL = time.Minute

// newRankServer makes the rank's Rank service. KV pushed to it that no
// Decode claims within kvTimeout (its coordinator died between the
// prefill and the decode) is dropped.
func newRankServer(e *engine.Engine, role cluster.Role, rec *tracing.Recorder, wm *metrics.Worker, node string, dial []grpc.DialOption, clientTLS *tls.Config, kvTimeout time.Duration) *rankServer {
	m := e.Model()
	cfg, plan := m.Config(), m.Plan()
	r := &rankServer{
		e: e, rank: plan.Rank, tp: plan.TP, kvHeads: cfg.KVHeads, heads: plan.KVHeads(),
		headDim: cfg.HeadDim, layers: cfg.Layers, dtype: kvWireDType(e.KVCacheDType()),
		sender: kvtransfer.NewSender(kvtransfer.SenderOptions{DialOptions: dial, TLS: clientTLS}),
		rec:    rec, metrics: wm, node: node, dropped: map[string]time.Time{},
	}
	if role != cluster.RolePrefill {
		r.receiver = kvtransfer.NewReceiver(kvtransfer.ReceiverOptions{
			Rank: r.rank, Heads: r.heads, HeadDim: r.headDim, Layers: r.layers, MaxTokens: cfg.MaxPositions, TTL: kvTimeout,
			DType: r.dtype,
		})
	}
	return r
}

// engineSource reads a prefill's KV for kvtransfer, each layer as soon
// as this rank has computed it in the prefill's last step: positions
// [from, to) of the prompt.
type engineSource struct {
	ctx      context.Context
	r        *rankServer
	blocks   []int32
	from, to int
	step     uint64 // 0: the KV is complete
}

func (s engineSource) ReadLayer(layer int, heads parallel.Range, dst []byte) error {
	if s.step != 0 {
		if err := s.r.e.WaitLayer(s.ctx, s.step, layer); err != nil {
			return fmt.Errorf("worker: waiting for layer %d of step %d: %w", layer, s.step, err)
		}
	}
	local := s.r.heads
	if heads.From < local.From || heads.To > local.To || heads.Len() <= 0 {
		return fmt.Errorf("worker: rank %d holds KV heads [%d,%d), not [%d,%d)", s.r.rank, local.From, local.To, heads.From, heads.To)
	}
	s.r.e.ReadKV(layer, s.blocks, s.from, s.to, heads.From-local.From, heads.To-local.From, dst)
	return nil
}

func (r *rankServer) SendKV(ctx context.Context, req *tandemv1.SendKVRequest) (*tandemv1.SendKVResponse, error) {
	kv, dest := req.GetKv(), req.GetDestination()
	if err := checkDestination(dest); err != nil {
		return nil, err
	}
	if err := checkHandle(kv, int(kv.GetNumTokens()), r.layers); err != nil {
		return nil, err
	}
	transfers, err := parallel.KVTransfers(r.kvHeads, r.tp, int(dest.GetTp()))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	start := time.Now()
	src := engineSource{ctx: ctx, r: r, blocks: req.GetBlocks(), from: int(kv.GetSkipTokens()), to: int(kv.GetNumTokens()), step: req.GetStep()}
	var (
		mu   sync.Mutex
		out  tandemv1.SendKVResponse
		errs []error
		wg   sync.WaitGroup
	)
	for _, t := range transfers {
		if t.From != r.rank {
			continue
		}
		spec := kvtransfer.SendSpec{
			RequestID: kv.GetRequestId(), Attempt: kv.GetAttempt(),
			SourceRank: r.rank, DestRank: t.To, DestAddr: dest.GetRankAddresses()[t.To],
			Layers: r.layers, Tokens: src.to - src.from, Heads: t.Heads, HeadDim: r.headDim, DType: r.dtype,
		}
		wg.Go(func() {
			pushed := time.Now()
			st, err := r.sender.Push(ctx, src, spec)
			recordSend(r.rec, spec.RequestID, spec, pushed, st)
			r.metrics.KVTransfer(metrics.DirectionSend, st.Bytes, time.Since(pushed))
			mu.Lock()
			defer mu.Unlock()
			out.Bytes += st.Bytes
			out.Retries += int32(st.Retries)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, status.Errorf(codes.Unavailable, "rank %d: %v", r.rank, err)
	}
	r.metrics.KVTransferTokens(metrics.DirectionSend, src.to)
	out.DurationUs = time.Since(start).Microseconds()
	return &out, nil
}

func (r *rankServer) LoadKV(ctx context.Context, req *tandemv1.LoadKVRequest) (*tandemv1.LoadKVResponse, error) {
	if r.receiver == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "rank %d of a prefill group receives no KV", r.rank)
	}
	kv := req.GetKv()
	if err := checkHandle(kv, int(kv.GetNumTokens()), r.layers); err != nil {
		return nil, err
	}
	if r.wasDropped(kv.GetRequestId()) {
		return nil, status.Errorf(codes.Unavailable, "rank %d: the KV of %q was dropped", r.rank, kv.GetRequestId())
	}
	tokens, skip := int(kv.GetNumTokens()), int(kv.GetSkipTokens())
	start := time.Now()
	// Stop waiting a little before the caller's deadline, so that KV that
	// arrives in time is written before the caller gives up and releases
	// the blocks.
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-min(time.Second, time.Until(d)/10)))
		defer cancel()
	}
	layers, err := r.receiver.Await(ctx, kvtransfer.Expect{
		RequestID: kv.GetRequestId(), Attempt: kv.GetAttempt(), Tokens: tokens - skip,
		SourceTP: int(kv.GetSourceTp()), KVHeads: r.kvHeads, DestTP: r.tp,
	})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "rank %d: %v", r.rank, err)
	}
	// Bytes as they crossed the wire, in the sender's dtype: the layers
	// are in ours, converted on receipt when the two differ.
	var bytes int64
	for l, data := range layers {
		r.e.WriteKV(l, req.GetBlocks(), skip, tokens, 0, r.heads.Len(), data)
		bytes += int64(len(data)) / int64(kvtransfer.ElemSize(r.dtype)) * int64(kvtransfer.ElemSize(kv.GetDtype()))
	}
	r.receiver.Recycle(layers)
	r.metrics.KVTransfer(metrics.DirectionRecv, bytes, time.Since(start))
	r.metrics.KVTransferTokens(metrics.DirectionRecv, tokens)
	// One record for the whole wait and load: the decode side's share of
	// the transfer (layer -1: all layers).
	r.rec.RecordKV(kv.GetRequestId(), &tandemv1.KVTransferTrace{
		Layer: -1, SourceRank: -1, DestRank: int32(r.rank), Bytes: bytes,
		StartUnixNanos: start.UnixNano(), DurationNanos: int64(time.Since(start)),
	})
	return &tandemv1.LoadKVResponse{Bytes: bytes}, nil
}

func (r *rankServer) DropKV(_ context.Context, req *tandemv1.DropKVRequest) (*tandemv1.DropKVResponse, error) {
	if r.receiver != nil {
		r.mu.Lock()
		now := time.Now()
		for id, at := range r.dropped {
			if now.Sub(at) > droppedTTL {
				delete(r.dropped, id)
			}
		}
		r.dropped[req.GetRequestId()] = now
		r.mu.Unlock()
		r.receiver.Drop(req.GetRequestId())
	}
	return &tandemv1.DropKVResponse{}, nil
}

func (r *rankServer) wasDropped(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.dropped[id]
	return ok && time.Since(at) <= droppedTTL
}
