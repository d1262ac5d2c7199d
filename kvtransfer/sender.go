package kvtransfer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemllm/tandem/parallel"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// SendSpec describes one push from one prefill rank to one decode rank.
type SendSpec struct {
	RequestID  string
	Attempt    uint32
	SourceRank int
	DestRank   int
	// DestAddr is host:port of the decode rank's gRPC server.
	DestAddr string
	Layers   int
	Tokens   int
	// Heads are the global KV heads to send (from parallel.KVTransfers).
	Heads   parallel.Range
	HeadDim int
	// DType is the element type the Source gives and the chunks carry:
	// the sending cache's (DATA_TYPE_FLOAT32, the default,
	// DATA_TYPE_BFLOAT16 or DATA_TYPE_FLOAT16). The receiver converts to
	// its own, if it differs.
	DType tandemv1.DataType
	// MaxChunkBytes is the payload bytes per chunk; default 1 MiB, at most
	// 8 MiB. A chunk holds at least one token and never spans layers.
	MaxChunkBytes int
}

// Stats are what a push cost, for step records and traces.
type Stats struct {
	Bytes    int64 // payload bytes sent, retries included
	Duration time.Duration
	Retries  int         // streams sent beyond the first
	PerLayer []LayerStat // one per layer: bytes and time spent reading+sending it
}

// LayerStat is what one layer of a push cost, retries included.
type LayerStat struct {
	Layer    int
	Bytes    int64
	Duration time.Duration
}

// SenderOptions configure a Sender.
type SenderOptions struct {
	// MaxAttempts is how many streams a push tries before giving up
	// (default 3).
	MaxAttempts int
	// DialOptions are added after the sender's own (transport
	// credentials, large flow-control windows and socket buffers). They
	// apply to gRPC streams only, not to the raw data plane.
	DialOptions []grpc.DialOption
	// TLS, when set, makes every connection TLS with this client
	// configuration, raw and gRPC alike (mutual TLS against the cluster's
	// CA, package pki); a receiver that refuses it fails the push, which
	// is retried as any failed stream (default nil: plain TCP).
	TLS *tls.Config
	// DisableRaw sends every stream over gRPC, never over the raw TCP data
	// plane.
	DisableRaw bool
}

// Sender pushes KV over the raw TCP data plane, or over gRPC where a
// destination does not speak it (see "Raw TCP" in the package doc). It keeps
// a few idle raw connections and one *grpc.ClientConn per destination
// address. It is safe for concurrent use.
type Sender struct {
	opts  SenderOptions
	codec codec

	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn
	rawIdle map[string][]*rawConn
	rawBusy map[*rawConn]struct{}
	refused map[string]time.Time // addresses that refused the raw hello, until when
	closed  bool
	// free holds layer buffers of finished pushes for reuse: zeroing fresh
	// ones costs as much as a copy of the KV.
	free      [][]byte
	freeBytes int
}

// maxFreeBytes bounds what a Sender keeps in free: two pushes of a 2048-token
// prompt of a 1B-class model.
const maxFreeBytes = 256 << 20

func (s *Sender) take(n int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, b := range s.free {
		if cap(b) >= n {
			s.free = slices.Delete(s.free, i, i+1)
			s.freeBytes -= cap(b)
			return b[:n]
		}
	}
	return make([]byte, n)
}

// recycle keeps a push's layer buffers. Only call it once the receiver has
// acked the push's last stream and no gRPC stream of it failed: gRPC may
// write from them until then.
func (s *Sender) recycle(bufs [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range bufs {
		if b != nil && s.freeBytes+cap(b) <= maxFreeBytes {
			s.free = append(s.free, b)
			s.freeBytes += cap(b)
		}
	}
}

// NewSender returns a Sender; it dials lazily, on the first push to each
// address.
func NewSender(opts SenderOptions) *Sender {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	return &Sender{
		opts: opts, codec: newCodec(), conns: make(map[string]*grpc.ClientConn),
		rawIdle: make(map[string][]*rawConn), rawBusy: make(map[*rawConn]struct{}), refused: make(map[string]time.Time),
	}
}

// Close closes every cached connection; pushes in flight fail.
func (s *Sender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for addr, cc := range s.conns {
		errs = append(errs, cc.Close())
		delete(s.conns, addr)
	}
	for addr, idle := range s.rawIdle {
		closeAll(idle)
		delete(s.rawIdle, addr)
	}
	for rc := range s.rawBusy { // their pushes fail; putRaw forgets them
		rc.c.Close()
	}
	return errors.Join(errs...)
}

func (s *Sender) conn(addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errSenderClosed
	}
	if cc := s.conns[addr]; cc != nil {
		return cc, nil
	}
	creds := insecure.NewCredentials()
	if s.opts.TLS != nil {
		creds = credentials.NewTLS(s.opts.TLS)
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(ioBufferSize),
		grpc.WithWriteBufferSize(ioBufferSize),
	}, s.opts.DialOptions...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("kvtransfer: dial %s: %w", addr, err)
	}
	s.conns[addr] = cc
	return cc, nil
}

// push is one Push call's state, shared by its attempts.
type push struct {
	spec          SendSpec
	src           Source
	row           int // bytes per token: heads*HeadDim elements
	perChunk      int // tokens per chunk
	chunksPerLyr  int
	layers        [][]byte // what src gave, kept for retries
	crcs          []uint32 // by seq, computed on first send
	stats         Stats
	sourceFailure error
	grpcFailed    bool  // a gRPC stream failed: it may still write from layers
	prepErr       error // why prepare stopped early, if it did
}

// read makes sure layer l has been read from the source.
func (p *push) read(s *Sender, l int) error {
	if p.layers[l] != nil {
		return nil
	}
	buf := s.take(2 * p.spec.Tokens * p.row)
	if err := p.src.ReadLayer(l, p.spec.Heads, buf); err != nil {
		p.sourceFailure = fmt.Errorf("reading layer %d: %w", l, err)
		return p.sourceFailure
	}
	p.layers[l] = buf
	return nil
}

// Push streams every layer of spec from src to the destination and waits for
// the KVAck, over the raw TCP data plane unless the destination refuses its
// hello or SenderOptions.DisableRaw is set, then over gRPC. An ack with complete=false or a broken stream is retried (the
// whole stream, same attempt number: the receiver replaces a partial stream
// from the same source rank) up to MaxAttempts; then it returns an error
// wrapping ErrTransferFailed naming the request, ranks and the last cause.
// src is asked for each layer once, however many streams are sent, so Push
// holds the rank's KV for the request until it returns. ctx bounds
// everything.
func (s *Sender) Push(ctx context.Context, src Source, spec SendSpec) (Stats, error) {
	start := time.Now()
	fail := func(p *push, tries int, cause error) (Stats, error) {
		var st Stats
		if p != nil {
			st = p.stats
		}
		st.Duration = time.Since(start)
		return st, fmt.Errorf("%w: request %q attempt %d, rank %d -> %d (%s), %d stream(s): %w",
			ErrTransferFailed, spec.RequestID, spec.Attempt, spec.SourceRank, spec.DestRank, spec.DestAddr, tries, cause)
	}
	if spec.MaxChunkBytes <= 0 {
		spec.MaxChunkBytes = defaultChunkBytes
	}
	if spec.DType == tandemv1.DataType_DATA_TYPE_UNSPECIFIED {
		spec.DType = tandemv1.DataType_DATA_TYPE_FLOAT32
	}
	spec.MaxChunkBytes = min(spec.MaxChunkBytes, maxChunkBytes)
	es := ElemSize(spec.DType)
	if spec.RequestID == "" || spec.Layers <= 0 || spec.Tokens <= 0 || spec.Heads.Len() <= 0 || spec.Heads.From < 0 || spec.HeadDim <= 0 || es == 0 {
		return fail(nil, 0, fmt.Errorf("invalid spec: %d layers, %d tokens, heads [%d,%d), head_dim %d, dtype %v",
			spec.Layers, spec.Tokens, spec.Heads.From, spec.Heads.To, spec.HeadDim, spec.DType))
	}
	p := &push{spec: spec, src: src, row: spec.Heads.Len() * spec.HeadDim * es}
	p.perChunk = max(1, spec.MaxChunkBytes/(2*p.row))
	p.chunksPerLyr = (spec.Tokens + p.perChunk - 1) / p.perChunk
	p.layers = make([][]byte, spec.Layers)
	p.crcs = make([]uint32, spec.Layers*p.chunksPerLyr)
	p.stats.PerLayer = make([]LayerStat, spec.Layers)
	for l := range p.stats.PerLayer {
		p.stats.PerLayer[l].Layer = l
	}
	var (
		client tandemv1.KVTransferClient
		last   error
	)
	raw := !s.opts.DisableRaw && !s.rawRefused(spec.DestAddr)
	for try := range s.opts.MaxAttempts {
		if try > 0 {
			p.stats.Retries++
		}
		if raw {
			last = s.rawStream(ctx, p)
			if errors.Is(last, errRawRefused) { // an older receiver: gRPC, in this try
				s.refuseRaw(spec.DestAddr)
				raw = false
			}
		}
		if !raw {
			if client == nil {
				cc, err := s.conn(spec.DestAddr)
				if err != nil {
					return fail(p, try+1, err)
				}
				client = tandemv1.NewKVTransferClient(cc)
			}
			last = s.stream(ctx, client, p)
			p.grpcFailed = p.grpcFailed || last != nil
		}
		if last == nil {
			if !p.grpcFailed { // a failed gRPC stream's frames might still be in gRPC's queue
				s.recycle(p.layers)
			}
			p.stats.Duration = time.Since(start)
			return p.stats, nil
		}
		if p.sourceFailure != nil || ctx.Err() != nil || errors.Is(last, errSenderClosed) {
			return fail(p, try+1, last)
		}
	}
	return fail(p, s.opts.MaxAttempts, last)
}

// stream sends the whole transfer once and checks the ack.
func (s *Sender) stream(ctx context.Context, client tandemv1.KVTransferClient, p *push) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream on every error path
	stream, err := client.Push(ctx, grpc.ForceCodecV2(s.codec))
	if err != nil {
		return err
	}
	sp := p.spec
	count := uint32(sp.Layers * p.chunksPerLyr)
	seq := uint32(0)
	for l := range sp.Layers {
		t0 := time.Now()
		if err := p.read(s, l); err != nil {
			return err
		}
		data := p.layers[l]
		// Last token block first: see "Chunks" in the package doc.
		for c := p.chunksPerLyr - 1; c >= 0; c-- {
			from, to := c*p.perChunk, min((c+1)*p.perChunk, sp.Tokens)
			k, v, h := p.chunk(data, seq, count, l, from, to)
			o := newOutChunk(h, k, v)
			if err := stream.SendMsg(o); err != nil {
				if errors.Is(err, io.EOF) { // the server ended the stream; its status says why
					_, err = stream.CloseAndRecv()
				}
				return err
			}
			n := int64(len(k) + len(v))
			p.stats.Bytes += n
			p.stats.PerLayer[l].Bytes += n
			seq++
		}
		p.stats.PerLayer[l].Duration += time.Since(t0)
	}
	ack, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	return checkAck(ack)
}

// chunk returns the keys and values of tokens [from, to) of layer l's data,
// views of it, and their header, checksummed once per push.
func (p *push) chunk(data []byte, seq, count uint32, l, from, to int) (k, v []byte, h chunkHeader) {
	sp := p.spec
	vOff := sp.Tokens * p.row
	k, v = data[from*p.row:to*p.row], data[vOff+from*p.row:vOff+to*p.row]
	if p.crcs[seq] == 0 {
		p.crcs[seq] = crc32.Update(crc32.Checksum(k, castagnoli), castagnoli, v)
	}
	return k, v, chunkHeader{
		requestID: sp.RequestID, attempt: sp.Attempt, seq: seq, count: count,
		sourceRank: sp.SourceRank, destRank: sp.DestRank, layer: l,
		heads: [2]int{sp.Heads.From, sp.Heads.To}, tokens: [2]int{from, to},
		shape: [4]int{2, to - from, sp.Heads.Len(), sp.HeadDim},
		dtype: sp.DType, crc: p.crcs[seq],
	}
}

// seqs formats chunk numbers for an error, eliding long lists.
func seqs(xs []uint32) string {
	if len(xs) > 16 {
		return fmt.Sprintf("%v... (%d in all)", xs[:16], len(xs))
	}
	return fmt.Sprint(xs)
}
