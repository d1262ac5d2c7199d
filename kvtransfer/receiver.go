package kvtransfer

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemllm/tandem/parallel"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// ReceiverOptions configure a Receiver.
type ReceiverOptions struct {
	// Rank is this decode rank; chunks for another dest_rank are rejected.
	Rank int
	// Heads are the global KV heads this rank holds; required.
	Heads parallel.Range
	// HeadDim is the size of one head; required.
	HeadDim int
	// Layers is the model's layer count; required.
	Layers int
	// MaxTokens is the longest prompt accepted; chunks past it are rejected
	// (default 32768).
	MaxTokens int
	// TTL is how long a request's buffered KV waits to be claimed by Await
	// before it is dropped (default 2 minutes). A request with an Await
	// waiting on it is kept.
	TTL time.Duration
	// DType is the element type of the layers Await returns (the decode
	// cache's): DATA_TYPE_FLOAT32 (the default), DATA_TYPE_BFLOAT16 or
	// DATA_TYPE_FLOAT16. Chunks of another are converted once, as they
	// are written into place.
	DType tandemv1.DataType
	// MaxBufferedBytes bounds the KV buffered for all requests not yet
	// claimed; a chunk that would need more is rejected (default 4 GiB).
	// A peer cannot make the receiver allocate without limit by sending
	// small chunks of far-off positions.
	MaxBufferedBytes int64
	// Logger receives a warning for each raw connection the receiver hangs
	// up on because it broke the protocol (a bad hello, a frame length out
	// of bounds, a header that does not parse); default slog.Default().
	Logger *slog.Logger
}

// Receiver serves tandemv1.KVTransferServer and the raw data plane
// ([Receiver.ServeRaw]) on a decode rank and assembles what arrives. Register
// it on a server built with ServerOptions.
type Receiver struct {
	tandemv1.UnimplementedKVTransferServer
	opts ReceiverOptions
	row  int // bytes per token of a layer buffer: Heads.Len()*HeadDim elements of DType
	es   int // bytes per element of DType

	mu   sync.Mutex
	reqs map[string]*request
	gen  uint64 // last stream generation handed out
	// ended remembers, for a TTL, requests claimed by Await or dropped:
	// a late or retried stream must not buffer their KV again.
	ended map[string]endedReq

	// free holds layer buffers given back with Recycle, so that a busy
	// decode rank does not allocate, zero and page in a prompt's worth of
	// KV for every request; at most freeLimit bytes are kept.
	freeMu sync.Mutex
	free   [][]byte
	freeN  int

	// buffered counts the bytes held in live requests' layer buffers,
	// against MaxBufferedBytes.
	buffered atomic.Int64
}

// endedReq is a request that is over, up to which attempt.
type endedReq struct {
	attempt uint32
	at      time.Time
}

// end notes that id is over up to attempt (r.mu held), forgetting old
// notes.
func (r *Receiver) end(id string, attempt uint32) {
	now := time.Now()
	for k, e := range r.ended {
		if now.Sub(e.at) > r.opts.TTL {
			delete(r.ended, k)
		}
	}
	r.ended[id] = endedReq{attempt: max(attempt, r.ended[id].attempt), at: now}
}

// freeLimit bounds the bytes Recycle keeps.
const freeLimit = 256 << 20

// request is the KV buffered for one request (one attempt of it).
type request struct {
	id      string
	attempt uint32
	timer   *time.Timer

	mu      sync.Mutex
	dead    string        // why the request is gone (claimed, dropped, superseded, expired); "" while live
	hint    int           // tokens to size new layer buffers for
	layers  [][]byte      // by layer, [2][caps[l]][heads][HeadDim] elements of the receiver's DType
	held    *atomic.Int64 // the receiver's count of buffered bytes
	caps    []int
	sources map[int]*source
	waiters int
	notify  chan struct{} // closed and replaced when a stream completes or the request dies
	// pinned counts chunks being read from the network straight into
	// layers (0 or 1); idle (on mu) is broadcast when it drops to 0.
	pinned int
	idle   sync.Cond
}

// source is what one prefill rank's latest stream has delivered.
type source struct {
	gen      uint64   // the stream now writing this source's share
	complete bool     // that stream's ack was complete
	rects    [][]rect // by layer, the chunks of that stream verified and written
}

// rect is a verified block of a layer: heads × tokens.
type rect struct{ heads, tokens parallel.Range }

// NewReceiver returns a Receiver. It panics on options missing a required
// field, a configuration bug.
func NewReceiver(opts ReceiverOptions) *Receiver {
	if opts.Heads.Len() <= 0 || opts.Heads.From < 0 || opts.HeadDim <= 0 || opts.Layers <= 0 {
		panic(fmt.Sprintf("kvtransfer: NewReceiver needs heads, head_dim and layers, got %+v", opts))
	}
	if opts.MaxTokens <= 0 {
		opts.MaxTokens = 32768
	}
	if opts.TTL <= 0 {
		opts.TTL = 2 * time.Minute
	}
	if opts.MaxBufferedBytes <= 0 {
		opts.MaxBufferedBytes = 4 << 30
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DType == tandemv1.DataType_DATA_TYPE_UNSPECIFIED {
		opts.DType = tandemv1.DataType_DATA_TYPE_FLOAT32
	}
	es := ElemSize(opts.DType)
	if es == 0 {
		panic(fmt.Sprintf("kvtransfer: NewReceiver: dtype %v", opts.DType))
	}
	return &Receiver{opts: opts, es: es, row: opts.Heads.Len() * opts.HeadDim * es, reqs: make(map[string]*request), ended: make(map[string]endedReq)}
}

// alloc returns a buffer of n bytes, a recycled one when one is large
// enough. Its contents are undefined: Await returns a layer only once
// every position in it was written by a verified chunk.
func (r *Receiver) alloc(n int) []byte {
	r.freeMu.Lock()
	defer r.freeMu.Unlock()
	for i, b := range r.free {
		if cap(b) >= n {
			r.free = append(r.free[:i], r.free[i+1:]...)
			r.freeN -= cap(b)
			return b[:n]
		}
	}
	return make([]byte, n)
}

// Recycle gives back the layers an Await returned, once the caller has
// copied them out; they must not be used afterwards.
func (r *Receiver) Recycle(layers [][]byte) {
	r.freeMu.Lock()
	defer r.freeMu.Unlock()
	for _, b := range layers {
		if b == nil || r.freeN+cap(b) > freeLimit {
			continue
		}
		r.free = append(r.free, b[:cap(b)])
		r.freeN += cap(b)
	}
}

// Pending is the number of requests with buffered KV (or an Await waiting).
func (r *Receiver) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

// Drop forgets everything buffered for the request (any attempt); an Await
// waiting on it returns ErrIncomplete. Used on abort.
func (r *Receiver) Drop(requestID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.end(requestID, math.MaxUint32)
	if req := r.reqs[requestID]; req != nil {
		delete(r.reqs, requestID)
		req.kill("dropped")
	}
}

// kill ends req (r.mu held): streams still writing to it fail their chunks
// and waiting Awaits return.
func (req *request) kill(why string) {
	req.timer.Stop()
	req.mu.Lock()
	defer req.mu.Unlock()
	if req.dead == "" {
		req.dead = why
		req.release()
		close(req.notify)
		req.idle.Broadcast()
	}
}

// release stops counting req's layer buffers as buffered and forgets
// them (req.mu held).
func (req *request) release() {
	for _, b := range req.layers {
		req.held.Add(-int64(len(b)))
	}
	req.layers = nil
}

// lookup returns the live request for (id, attempt), creating it, or
// replacing one of a lower attempt. It fails if a higher attempt is buffered.
// r.mu must be held.
func (r *Receiver) lookup(id string, attempt uint32) (*request, error) {
	if e, ok := r.ended[id]; ok && attempt <= e.attempt && time.Since(e.at) <= r.opts.TTL {
		return nil, fmt.Errorf("attempt %d of %q is over (its KV was claimed or dropped)", attempt, id)
	}
	if req := r.reqs[id]; req != nil {
		switch {
		case req.attempt == attempt:
			return req, nil
		case req.attempt > attempt:
			return nil, fmt.Errorf("attempt %d is stale: attempt %d has begun", attempt, req.attempt)
		}
		req.kill(fmt.Sprintf("superseded by attempt %d", attempt))
	}
	req := &request{
		id: id, attempt: attempt,
		layers:  make([][]byte, r.opts.Layers),
		caps:    make([]int, r.opts.Layers),
		sources: make(map[int]*source),
		notify:  make(chan struct{}),
		held:    &r.buffered,
	}
	req.idle.L = &req.mu
	req.timer = time.AfterFunc(r.opts.TTL, func() { r.expire(req) })
	r.reqs[id] = req
	return req, nil
}

func (r *Receiver) expire(req *request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reqs[req.id] != req {
		return
	}
	req.mu.Lock()
	waiting := req.waiters > 0
	req.mu.Unlock()
	if waiting {
		req.timer.Reset(r.opts.TTL)
		return
	}
	delete(r.reqs, req.id)
	req.kill(fmt.Sprintf("expired: not claimed within %v", r.opts.TTL))
}

// stream is the receiving side of one Push stream.
type stream struct {
	gen     uint64
	req     *request // nil until a chunk passes the identity checks
	id      string
	attempt uint32
	src     int
	count   uint32
	arrived []uint64 // bitset by seq
	failed  []uint32
	bytes   int64
	why     string // the first failure, for the ack
}

// maxChunks bounds chunk_count so a bogus count cannot allocate much: every
// chunk carries at least one token of one head of one layer.
func (r *Receiver) maxChunks() int {
	return r.opts.Layers * r.opts.MaxTokens * r.opts.Heads.Len()
}

// Push receives one stream of chunks and acks it; see the package doc.
func (r *Receiver) Push(ps tandemv1.KVTransfer_PushServer) error {
	var m tandemv1.KVChunk // reused: the codec decodes into its payload buffer
	st := &stream{}
	for {
		if err := ps.RecvMsg(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return err
		}
		r.chunk(st, &m)
	}
	return ps.SendAndClose(r.finish(st))
}

// chunk checks one chunk and writes it into the request's layer buffers.
func (r *Receiver) chunk(st *stream, m *tandemv1.KVChunk) {
	r.begin(st, m, len(m.Payload))
	if err := r.place(st, m); err != nil {
		r.reject(st, m.Seq, err)
	}
}

// begin counts a chunk of n payload bytes and, for the stream's first chunk,
// takes the stream's identity from it.
func (r *Receiver) begin(st *stream, m *tandemv1.KVChunk, n int) {
	st.bytes += int64(n)
	if st.count == 0 && st.why == "" {
		st.id, st.attempt, st.src, st.count = m.RequestId, m.Attempt, int(m.SourceRank), m.ChunkCount
		if st.count == 0 || int64(st.count) > int64(r.maxChunks()) {
			st.count = 0
			st.why = fmt.Sprintf("chunk_count %d out of range", m.ChunkCount)
		} else {
			st.arrived = make([]uint64, (st.count+63)/64)
		}
	}
}

// reject records chunk seq as failed for the ack.
func (r *Receiver) reject(st *stream, seq uint32, err error) {
	if seq < st.count {
		st.arrived[seq/64] |= 1 << (seq % 64)
	}
	st.failed = append(st.failed, seq)
	if st.why == "" {
		st.why = fmt.Sprintf("chunk %d: %v", seq, err)
	}
}

// placement is where a validated chunk goes.
type placement struct {
	layer         int
	heads, tokens parallel.Range
	dtype         tandemv1.DataType
	size          int // bytes per element of dtype
}

// place validates m and copies it into place; an error rejects the chunk.
func (r *Receiver) place(st *stream, m *tandemv1.KVChunk) error {
	pl, err := r.validate(st, m, len(m.Payload))
	if err != nil {
		return err
	}
	if crc := crc32.Checksum(m.Payload, castagnoli); crc != m.Crc32C {
		return fmt.Errorf("crc32c %08x, chunk says %08x", crc, m.Crc32C)
	}
	return r.copyIn(st, pl, m.Payload)
}

// validate checks everything about chunk m but its payload's checksum, n
// being the payload's length, and registers the stream on its first valid
// chunk.
func (r *Receiver) validate(st *stream, m *tandemv1.KVChunk, n int) (placement, error) {
	switch {
	case st.count == 0:
		return placement{}, errors.New(st.why)
	case m.RequestId != st.id || m.Attempt != st.attempt || int(m.SourceRank) != st.src || m.ChunkCount != st.count:
		return placement{}, fmt.Errorf("framing differs from the stream's first chunk (request %q attempt %d source %d count %d)",
			st.id, st.attempt, st.src, st.count)
	case m.Seq >= st.count:
		return placement{}, fmt.Errorf("seq out of range [0,%d)", st.count)
	case st.arrived[m.Seq/64]&(1<<(m.Seq%64)) != 0:
		return placement{}, errors.New("duplicate seq")
	case int(m.DestRank) != r.opts.Rank:
		return placement{}, fmt.Errorf("dest_rank %d, this is rank %d", m.DestRank, r.opts.Rank)
	}
	st.arrived[m.Seq/64] |= 1 << (m.Seq % 64)
	if st.req == nil {
		if err := r.register(st); err != nil {
			return placement{}, err
		}
	}
	pl := placement{
		layer:  int(m.Layer),
		heads:  parallel.Range{From: int(m.HeadStart), To: int(m.HeadEnd)},
		tokens: parallel.Range{From: int(m.TokenStart), To: int(m.TokenEnd)},
		dtype:  m.Dtype,
		size:   ElemSize(m.Dtype),
	}
	layer, heads, tokens := pl.layer, pl.heads, pl.tokens
	switch {
	case layer < 0 || layer >= r.opts.Layers:
		return pl, fmt.Errorf("layer %d out of range [0,%d)", layer, r.opts.Layers)
	case heads.Len() <= 0 || heads.From < r.opts.Heads.From || heads.To > r.opts.Heads.To:
		return pl, fmt.Errorf("heads [%d,%d) not within this rank's [%d,%d)", heads.From, heads.To, r.opts.Heads.From, r.opts.Heads.To)
	case tokens.Len() <= 0 || tokens.From < 0 || tokens.To > r.opts.MaxTokens:
		return pl, fmt.Errorf("tokens [%d,%d) out of range [0,%d]", tokens.From, tokens.To, r.opts.MaxTokens)
	case len(m.Shape) != 4 || m.Shape[0] != 2 || int(m.Shape[1]) != tokens.Len() || int(m.Shape[2]) != heads.Len() || int(m.Shape[3]) != r.opts.HeadDim:
		return pl, fmt.Errorf("shape %v, want [2 %d %d %d]", m.Shape, tokens.Len(), heads.Len(), r.opts.HeadDim)
	case pl.size == 0:
		return pl, fmt.Errorf("dtype %v not supported", m.Dtype)
	}
	if want := 2 * tokens.Len() * heads.Len() * r.opts.HeadDim * pl.size; n != want {
		return pl, fmt.Errorf("payload %d bytes, shape says %d", n, want)
	}
	return pl, nil
}

// writable waits until no chunk is being read into req's buffers (see pin)
// and checks that st may still write to req. req.mu must be held.
func (r *Receiver) writable(st *stream) error {
	req := st.req
	for req.pinned > 0 && req.dead == "" {
		req.idle.Wait()
	}
	if req.dead != "" {
		return fmt.Errorf("request %s", req.dead)
	}
	if req.sources[st.src].gen != st.gen {
		return errSuperseded
	}
	return nil
}

var errSuperseded = errors.New("superseded by a newer stream from the same source rank")

// copyIn writes a verified payload into the request's layer buffer.
func (r *Receiver) copyIn(st *stream, pl placement, payload []byte) error {
	req := st.req
	req.mu.Lock()
	defer req.mu.Unlock()
	if err := r.writable(st); err != nil {
		return err
	}
	heads, tokens, size := pl.heads, pl.tokens, pl.size
	buf, c, err := r.buffer(req, pl.layer, tokens.To)
	if err != nil {
		return err
	}
	// Copy token rows: a chunk's row is its heads, a buffer row all of
	// ours; crow elements, in the chunk's dtype and then in ours.
	crow := heads.Len() * r.opts.HeadDim
	off := (heads.From - r.opts.Heads.From) * r.opts.HeadDim * r.es
	for kv := range 2 {
		src := payload[kv*tokens.Len()*crow*size:]
		dst := buf[kv*c*r.row+tokens.From*r.row:]
		if crow*r.es == r.row { // whole rows: one contiguous run
			convert(dst[:tokens.Len()*r.row], r.opts.DType, src[:tokens.Len()*crow*size], pl.dtype)
			continue
		}
		for t := range tokens.Len() {
			convert(dst[t*r.row+off:t*r.row+off+crow*r.es], r.opts.DType, src[t*crow*size:(t+1)*crow*size], pl.dtype)
		}
	}
	req.sources[st.src].rects[pl.layer] = append(req.sources[st.src].rects[pl.layer], rect{heads, tokens})
	return nil
}

// direct reports whether a chunk can be read from the network straight into
// the layer buffer: of the receiver's dtype (nothing to convert), and whole
// buffer rows (all of this rank's heads), so keys and values are one
// contiguous region each.
func (r *Receiver) direct(pl placement) bool {
	return pl.dtype == r.opts.DType && pl.heads == r.opts.Heads
}

// pin returns the byte views of the layer buffer that a direct chunk's keys
// and values go to, and keeps the buffer from being grown or handed out by
// Await until unpin. One chunk at a time is pinned per request (others
// wait), so a chunk of a superseded stream can never land on top of what a
// newer stream has verified.
func (r *Receiver) pin(st *stream, pl placement) (k, v []byte, err error) {
	req := st.req
	req.mu.Lock()
	defer req.mu.Unlock()
	if err := r.writable(st); err != nil {
		return nil, nil, err
	}
	buf, c, err := r.buffer(req, pl.layer, pl.tokens.To)
	if err != nil {
		return nil, nil, err
	}
	req.pinned++
	from, to := pl.tokens.From*r.row, pl.tokens.To*r.row
	return buf[from:to], buf[c*r.row+from : c*r.row+to], nil
}

// unpin ends what pin began. When cause is nil (the payload arrived and
// matched its checksum) the chunk counts as written, if st still may write.
func (r *Receiver) unpin(st *stream, pl placement, cause error) error {
	req := st.req
	req.mu.Lock()
	defer req.mu.Unlock()
	req.pinned--
	if req.pinned == 0 {
		req.idle.Broadcast()
		if req.dead == "" { // wake Awaits waiting for the pin to go
			close(req.notify)
			req.notify = make(chan struct{})
		}
	}
	if cause != nil {
		return cause
	}
	if err := r.writable(st); err != nil {
		return err
	}
	req.sources[st.src].rects[pl.layer] = append(req.sources[st.src].rects[pl.layer], rect{pl.heads, pl.tokens})
	return nil
}

// register attaches st to its request as the stream now filling its source
// rank's share, replacing any earlier stream from that rank.
func (r *Receiver) register(st *stream) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	req, err := r.lookup(st.id, st.attempt)
	if err != nil {
		return err
	}
	r.gen++
	st.gen, st.req = r.gen, req
	req.mu.Lock()
	defer req.mu.Unlock()
	req.sources[st.src] = &source{gen: st.gen, rects: make([][]rect, r.opts.Layers)}
	return nil
}

// buffer returns layer l's buffer and its token capacity, grown to hold
// tokens [0,end), or an error when growing it would pass the receiver's
// budget. req.mu must be held.
func (r *Receiver) buffer(req *request, l, end int) ([]byte, int, error) {
	c := req.caps[l]
	if end <= c {
		return req.layers[l], c, nil
	}
	// Senders send each layer's last token block first, so this happens
	// once per layer; for other orders grow geometrically.
	n := max(req.hint, end, min(2*c, r.opts.MaxTokens))
	grow := int64(2*n*r.row - len(req.layers[l]))
	if r.buffered.Load()+grow > r.opts.MaxBufferedBytes {
		return nil, 0, fmt.Errorf("buffering %d more bytes would pass the receiver's limit of %d", grow, r.opts.MaxBufferedBytes)
	}
	req.hint = max(req.hint, end)
	buf := r.alloc(2 * n * r.row)
	if old := req.layers[l]; c > 0 {
		copy(buf, old[:c*r.row])
		copy(buf[n*r.row:], old[c*r.row:])
	}
	r.buffered.Add(grow)
	req.layers[l], req.caps[l] = buf, n
	return buf, n, nil
}

// finish builds the ack for a stream that the sender closed.
func (r *Receiver) finish(st *stream) *tandemv1.KVAck {
	ack := &tandemv1.KVAck{RequestId: st.id, FailedChunks: st.failed, ReceivedBytes: st.bytes}
	for seq := range st.count {
		if st.arrived[seq/64]&(1<<(seq%64)) == 0 {
			ack.MissingChunks = append(ack.MissingChunks, seq)
		}
	}
	switch {
	case st.why != "":
		ack.ErrorMessage = st.why
	case st.count == 0:
		ack.ErrorMessage = "empty stream"
	case len(ack.MissingChunks) > 0:
		ack.ErrorMessage = fmt.Sprintf("%d of %d chunks missing", len(ack.MissingChunks), st.count)
	}
	if ack.ErrorMessage != "" {
		return ack
	}
	req := st.req
	req.mu.Lock()
	defer req.mu.Unlock()
	switch s := req.sources[st.src]; {
	case req.dead != "":
		ack.ErrorMessage = "request " + req.dead
	case s.gen != st.gen:
		ack.ErrorMessage = errSuperseded.Error()
	default:
		s.complete = true
		ack.Complete = true
		close(req.notify) // wake Awaits
		req.notify = make(chan struct{})
	}
	return ack
}

// Expect describes what a complete transfer is for one request on this rank.
type Expect struct {
	RequestID string
	Attempt   uint32
	Tokens    int
	SourceTP  int // prefill group's TP degree
	KVHeads   int // the model's total KV heads
	DestTP    int // this (decode) group's TP degree
}

// Await blocks until every KV head of the receiver's Heads has arrived and
// verified, through complete streams, for all layers and tokens of e (from
// the source ranks parallel.KVTransfers(e.KVHeads, e.SourceTP, e.DestTP)
// assigns to this rank), then returns the assembled KV and forgets it. KV is
// returned as one []byte per layer laid out [2][Tokens][heads][HeadDim], little-endian
// elements of ReceiverOptions.DType.
// Await may be called before, during or after the pushes; one Await claims a
// request. When ctx ends first, or the request is dropped or superseded by a
// later attempt, the error wraps ErrIncomplete and says which source ranks
// and layers are missing.
func (r *Receiver) Await(ctx context.Context, e Expect) ([][]byte, error) {
	fail := func(format string, args ...any) ([][]byte, error) {
		return nil, fmt.Errorf("%w: request %q attempt %d on rank %d: %s",
			ErrIncomplete, e.RequestID, e.Attempt, r.opts.Rank, fmt.Sprintf(format, args...))
	}
	if e.Tokens <= 0 || e.Tokens > r.opts.MaxTokens {
		return nil, fmt.Errorf("kvtransfer: Await: %d tokens out of range [1,%d]", e.Tokens, r.opts.MaxTokens)
	}
	trs, err := r.transfersHere(e)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	req, err := r.lookup(e.RequestID, e.Attempt)
	r.mu.Unlock()
	if err != nil {
		return fail("%v", err)
	}

	req.mu.Lock()
	req.waiters++
	req.hint = max(req.hint, e.Tokens)
	for {
		if req.dead != "" {
			req.waiters--
			req.mu.Unlock()
			return fail("%s", req.dead)
		}
		missing := r.missing(req, trs, e.Tokens)
		if missing == "" && req.pinned == 0 {
			break
		}
		if missing == "" { // a late chunk is still being read into a layer
			missing = "a chunk still being written"
		}
		ch := req.notify
		req.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			req.mu.Lock()
			req.waiters--
			idle := req.waiters == 0 && len(req.sources) == 0
			req.mu.Unlock()
			if idle { // only this Await made the entry: forget it
				r.mu.Lock()
				if r.reqs[req.id] == req {
					delete(r.reqs, req.id)
					req.kill("abandoned")
				}
				r.mu.Unlock()
			}
			return fail("%v; missing %s", context.Cause(ctx), missing)
		}
		req.mu.Lock()
	}
	out := make([][]byte, r.opts.Layers)
	n := e.Tokens * r.row
	for l, buf := range req.layers {
		if c := req.caps[l]; c != e.Tokens { // values start at c*row: move them up
			copy(buf[n:2*n], buf[c*r.row:c*r.row+n])
		}
		out[l] = buf[:2*n] // full capacity kept, for Recycle
	}
	req.waiters--
	// Dead before unlocking: no late stream may write into what we return.
	req.dead = "claimed by Await"
	req.release()
	close(req.notify)
	req.mu.Unlock()

	r.mu.Lock()
	if r.reqs[req.id] == req {
		delete(r.reqs, req.id)
	}
	r.end(req.id, req.attempt)
	req.timer.Stop()
	r.mu.Unlock()
	return out, nil
}

// transfersHere are the transfers e implies into this rank; their heads must
// be exactly the rank's.
func (r *Receiver) transfersHere(e Expect) ([]parallel.Transfer, error) {
	all, err := parallel.KVTransfers(e.KVHeads, e.SourceTP, e.DestTP)
	if err != nil {
		return nil, fmt.Errorf("kvtransfer: Await: %w", err)
	}
	var here []parallel.Transfer
	got := 0
	for _, t := range all {
		if t.To == r.opts.Rank {
			here = append(here, t)
			got += t.Heads.Len()
			if t.Heads.From < r.opts.Heads.From || t.Heads.To > r.opts.Heads.To {
				got = -1 << 30
			}
		}
	}
	if got != r.opts.Heads.Len() {
		return nil, fmt.Errorf("kvtransfer: Await: %d KV heads over TP %d -> %d do not give rank %d heads [%d,%d)",
			e.KVHeads, e.SourceTP, e.DestTP, r.opts.Rank, r.opts.Heads.From, r.opts.Heads.To)
	}
	return here, nil
}

// missing describes what of trs has not arrived through complete streams,
// "" when nothing. req.mu must be held.
func (r *Receiver) missing(req *request, trs []parallel.Transfer, tokens int) string {
	var out []string
	for _, t := range trs {
		s := req.sources[t.From]
		if s == nil {
			out = append(out, fmt.Sprintf("source rank %d (heads [%d,%d)): nothing received", t.From, t.Heads.From, t.Heads.To))
			continue
		}
		var layers []int
		for l := range r.opts.Layers {
			if !covers(s.rects[l], t.Heads, tokens) {
				layers = append(layers, l)
			}
		}
		switch {
		case !s.complete && len(layers) == 0:
			out = append(out, fmt.Sprintf("source rank %d: stream not finished", t.From))
		case !s.complete:
			out = append(out, fmt.Sprintf("source rank %d: stream not finished, layers %s missing", t.From, spans(layers)))
		case len(layers) > 0:
			out = append(out, fmt.Sprintf("source rank %d: complete stream did not cover heads [%d,%d) × %d tokens in layers %s",
				t.From, t.Heads.From, t.Heads.To, tokens, spans(layers)))
		}
	}
	return strings.Join(out, "; ")
}

// covers reports whether rects cover heads × [0,tokens).
func covers(rects []rect, heads parallel.Range, tokens int) bool {
	var spans []parallel.Range
	for h := heads.From; h < heads.To; h++ {
		spans = spans[:0]
		for _, rc := range rects {
			if rc.heads.From <= h && h < rc.heads.To {
				spans = append(spans, rc.tokens)
			}
		}
		slices.SortFunc(spans, func(a, b parallel.Range) int { return a.From - b.From })
		end := 0
		for _, s := range spans {
			if s.From > end {
				break
			}
			end = max(end, s.To)
		}
		if end < tokens {
			return false
		}
	}
	return true
}
