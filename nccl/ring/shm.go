package ring

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tandemllm/tandem/nccl"
)

// Ranks that share a host sum their allreduces through one shared memory
// segment instead of their sockets, as NCCL's SHM transport does within a
// node: each rank copies its buffer into its slot, and after a barrier
// either every rank sums every slot (small buffers, one barrier) or each
// sums its 1/n of them in place and, after a second barrier, copies the
// others' sums (two barriers). Each byte is copied twice and read n times
// in all, with no kernel in between, where the TCP ring moves 2(n-1)/n of
// the buffer through two kernel copies per hop. The other collectives
// keep to TCP; the connections also carry the failures: a rank that dies
// or closes hangs up its sockets, which the ranks waiting in a barrier
// poll.
//
// Layout: a control page (magic, group size and a nonce, the barrier
// counter, the abort word and each rank's header, per parity), then two
// parities of n slots of shmSlotBytes. Buffers larger than a slot go in
// steps of a slot; consecutive steps alternate parities, so a rank may
// fill its next slot while a slower one still reads the last.
const (
	shmMagic     = 0x4d485354 // "TSHM"
	shmSlotBytes = 512 << 10
	shmLine      = 64 // one cache line per written word or header
	offNonce     = 8
	offBarrier   = 64
	offSleepers  = 128
	offAbort     = 192
	offHeaders   = 256
	offerBytes   = 88 // see offerShm
	// Answers in the handshake: no segment; a segment; a segment and
	// every rank a goroutine of the same process.
	shmNo        = 0
	shmYes       = 1
	shmInProcess = 2
	// shmSmallReads: buffers whose n copies add up to no more than this
	// take the one-barrier path, every rank summing every slot.
	shmSmallReads = 256 << 10
	// shmPoll is the longest a rank sleeps in a barrier's futex between
	// looks; it polls its peers' connections every 64 looks (about 128
	// ms), the longest a dead peer goes unnoticed (an abort is seen at
	// the next look).
	shmPoll = 2 * time.Millisecond
	// shmSpin is how many times a waiting rank looks at the barrier
	// before sleeping, when every rank can have a core of its own.
	shmSpin = 1 << 14
)

// shmLayout gives the offset of the slots and the segment's size for a
// group of n.
func shmLayout(n int) (data, total int) {
	data = (offHeaders + 2*n*shmLine + 4095) &^ 4095
	return data, data + 2*n*shmSlotBytes
}

// shm is one rank's view of the group's segment.
type shm struct {
	mem      []byte
	rank, n  int
	data     int
	barriers uint32        // barriers reached, the same count on every rank
	passed   atomic.Uint32 // barriers passed: barriers, or one less inside a wait
	steps    uint64        // slot-sized steps taken, for the parity
	spin     int
	suspect  int // the peer whose socket had bytes at the last look, or -1
	// inProcess: every rank is a goroutine of this process (tests,
	// benchmarks). A goroutine asleep in a futex keeps its P, which the
	// ranks it waits for may need, until the runtime notices (up to
	// 10 ms), and one asleep on a timer wakes late, so such ranks wait by
	// yielding to each other.
	inProcess bool
	acc       []float32 // bf16 sums in float32

	// The mapping must outlive any call using it, while Close may come
	// from another goroutine in the middle of one.
	mu     sync.Mutex
	busy   bool
	closed bool
}

func newShm(mem []byte, rank, n int, inProcess bool) *shm {
	s := &shm{mem: mem, rank: rank, n: n, inProcess: inProcess}
	s.data, _ = shmLayout(n)
	if n <= runtime.NumCPU() {
		s.spin = shmSpin
	}
	return s
}

func (s *shm) word(off int) *uint32 { return (*uint32)(unsafe.Pointer(&s.mem[off])) }

func (s *shm) word64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&s.mem[off])) }

func (s *shm) header(parity, r int) []byte {
	off := offHeaders + (parity*s.n+r)*shmLine
	return s.mem[off : off+headerBytes]
}

func (s *shm) slot(parity, r int) []byte {
	off := s.data + (parity*s.n+r)*shmSlotBytes
	return s.mem[off : off+shmSlotBytes]
}

// enter marks a call using the mapping; false once closed.
func (s *shm) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = !s.closed
	return s.busy
}

func (s *shm) exit() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = false
	if s.closed && s.mem != nil {
		unmapShm(s.mem)
		s.mem = nil
	}
}

// abort tells the peers waiting in a barrier that this rank is gone; at
// close the mapping goes too, now or when the call using it returns.
func (s *shm) abort(closing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mem == nil {
		return
	}
	// Rank and barriers passed in one word: a peer fails only at the
	// barriers this rank never passed, so a rank that finished a call and
	// closed does not fail the peers still finishing the same call.
	// A rank closed from another goroutine after arriving at a barrier
	// but before passing it counts as not having passed: its peers fail
	// there, erring on the safe side.
	atomic.CompareAndSwapUint64(s.word64(offAbort), 0, uint64(s.rank+1)<<32|uint64(s.passed.Load()))
	futexWake(s.word(offBarrier))
	if closing {
		s.closed = true
		if !s.busy {
			unmapShm(s.mem)
			s.mem = nil
		}
	}
}

// allReduceShm sums buf through the segment (see the top of this file).
func (c *Comm) allReduceShm(ctx context.Context, h header, buf nccl.Buffer) error {
	s := c.shm
	if !s.enter() {
		return fmt.Errorf("ring: rank %d: %w", c.rank, nccl.ErrClosed)
	}
	defer s.exit()
	data, es, n := buf.Host(), h.dtype.Size(), c.size
	small := len(data) <= shmSlotBytes && len(data)*n <= shmSmallReads
	for off := 0; off == 0 || off < len(data); off += shmSlotBytes {
		part := data[off:min(off+shmSlotBytes, len(data))]
		p := int(s.steps & 1)
		s.steps++
		count := len(part) / es
		from, to := chunk(c.rank, n, count, es) // this rank's 1/n on the two-barrier path
		h.put(s.header(p, c.rank))
		if small {
			copy(s.slot(p, c.rank), part)
		} else {
			// Only this rank reads its own 1/n: it stays where it is.
			copy(s.slot(p, c.rank)[:from], part[:from])
			copy(s.slot(p, c.rank)[to:len(part)], part[to:])
		}
		if err := c.shmBarrier(ctx); err != nil {
			return err
		}
		if off == 0 {
			if err := c.mismatch(func(r int) header { hr, _ := parseHeader(s.header(p, r)); return hr }); err != nil {
				return err
			}
		}
		// A rank that arrived and then left (its ctx ended) counts as
		// arrived, but no longer looks after its slot.
		if err := c.shmAborted(); err != nil {
			return err
		}
		if small {
			s.sum(p, h.dtype, part, 0, count, -1)
			continue
		}
		s.sum(p, h.dtype, part[from:to], from/es, to/es, c.rank)
		copy(s.slot(p, c.rank)[from:to], part[from:to])
		if err := c.shmBarrier(ctx); err != nil {
			return err
		}
		if err := c.shmAborted(); err != nil {
			return err
		}
		for r := range n {
			if r != c.rank {
				from, to := chunk(r, n, count, es)
				copy(part[from:to], s.slot(p, r)[from:to])
			}
		}
	}
	return nil
}

// sum writes into dst the sum of elements [from, to) of every rank's
// values, starting with rank own's, which dst already holds, or, with own
// < 0, with slot 0's, and going on in rank order through the slots of
// parity p: the order is fixed by the group and the slice, so every rank
// that computes a sum gets the same bits, run after run.
func (s *shm) sum(p int, dt nccl.DType, dst []byte, from, to, own int) {
	es := dt.Size()
	src := func(r int) []byte { return s.slot(p, r)[from*es : to*es] }
	first := own
	if own < 0 {
		first = 0
		copy(dst, src(0))
	}
	if dt == nccl.F32 {
		d := f32s(dst)
		for r := range s.n {
			if r != first {
				addF32(d, f32s(src(r)))
			}
		}
		return
	}
	if cap(s.acc) < to-from {
		s.acc = make([]float32, to-from)
	}
	acc := s.acc[:to-from]
	widenBF16(acc, u16s(dst))
	for r := range s.n {
		if r != first {
			accBF16(acc, u16s(src(r)))
		}
	}
	narrowBF16(u16s(dst), acc)
}

// shmBarrier returns once every rank has arrived at the same barrier, or
// fails when a peer aborted, hung up or is found in another collective,
// when this rank is closed, or when ctx ends.
func (c *Comm) shmBarrier(ctx context.Context) error {
	s := c.shm
	ctr := s.word(offBarrier)
	s.barriers++
	s.suspect = -1
	target := s.barriers * uint32(c.size)
	if atomic.AddUint32(ctr, 1) == target {
		if atomic.LoadUint32(s.word(offSleepers)) > 0 {
			futexWake(ctr)
		}
	} else if err := c.shmWait(ctx, ctr, target); err != nil {
		return err
	}
	s.passed.Store(s.barriers)
	return nil
}

// shmWait waits until the barrier counter reaches target: spinning while
// every rank can have a core, then yielding (ranks in one process) or
// sleeping in the futex, looking around between looks (shmCheck).
func (c *Comm) shmWait(ctx context.Context, ctr *uint32, target uint32) error {
	s := c.shm
	sleepers := s.word(offSleepers)
	reached := func(v uint32) bool { return int32(v-target) >= 0 }
	for i := 0; ; i++ {
		if reached(atomic.LoadUint32(ctr)) {
			return nil
		}
		if i < s.spin {
			continue
		}
		conns := i%64 == 63
		if s.inProcess {
			conns = i%1024 == 1023
		}
		if err := c.shmCheck(ctx, conns); err != nil {
			// The last rank may have arrived since the look above, then
			// finished, closed or gone on to another collective: what
			// its socket shows is then no failure of this barrier.
			if reached(atomic.LoadUint32(ctr)) {
				return nil
			}
			return err
		}
		if s.inProcess {
			runtime.Gosched()
			continue
		}
		// Announced before the last look, so that the last rank to
		// arrive either is seen here or sees this rank asleep.
		atomic.AddUint32(sleepers, 1)
		if v := atomic.LoadUint32(ctr); !reached(v) {
			futexWait(ctr, v, shmPoll)
		}
		atomic.AddUint32(sleepers, ^uint32(0))
	}
}

// shmAborted reports a peer that gave up on the group before passing
// the barrier this rank last reached.
func (c *Comm) shmAborted() error {
	w := atomic.LoadUint64(c.shm.word64(offAbort))
	r, passed := int(w>>32)-1, uint32(w)
	if w != 0 && r != c.rank && int32(c.shm.barriers-passed) > 0 {
		return fmt.Errorf("ring: rank %d: %w: rank %d left the shared-memory allreduce (it failed or was closed)",
			c.rank, nccl.ErrPeerLost, r)
	}
	return nil
}

// shmCheck is a waiting rank's look around: the abort word, its own
// state, ctx, and now and then every peer's connection.
func (c *Comm) shmCheck(ctx context.Context, conns bool) error {
	if err := c.shmAborted(); err != nil {
		return err
	}
	if c.closed.Load() {
		return fmt.Errorf("ring: rank %d: %w", c.rank, nccl.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return os.ErrDeadlineExceeded
	}
	if !conns {
		return nil
	}
	for _, p := range c.peers {
		if p == nil {
			continue
		}
		hungUp, readable := connState(p.conn)
		switch {
		case hungUp:
			return c.lost(p, io.EOF)
		case readable && c.shm.suspect != p.rank:
			// A TLS peer that closes sends an alert before its FIN:
			// bytes twice in a row, with no hang-up, are a mismatch.
			c.shm.suspect = p.rank
		case readable:
			// Every collective but this one opens with a header on
			// the sockets, and none is in flight while a barrier waits.
			return fmt.Errorf("ring: rank %d: %w: rank %d called another collective over TCP while this rank is in a shared-memory allreduce",
				c.rank, nccl.ErrMismatch, p.rank)
		}
	}
	return nil
}

// negotiateShm offers the group a segment made by rank 0 once the
// connections are up. Every rank answers whether it could map it, and
// rank 0 says whether all could: the group then uses it, or every rank
// keeps to TCP. nil means TCP. ctx's end, deadline or cancellation, cuts
// the handshake short, as it does the rest of Connect.
func negotiateShm(ctx context.Context, rank int, conns []net.Conn, opts Options) (*shm, error) {
	setDeadlines := func(t time.Time) {
		for _, c := range conns {
			if c != nil {
				c.SetDeadline(t)
			}
		}
	}
	stop := context.AfterFunc(ctx, func() { setDeadlines(time.Unix(1, 0)) })
	var s *shm
	var err error
	if rank == 0 {
		s, err = offerShm(conns, opts)
	} else {
		s, err = answerShm(rank, conns, opts)
	}
	if !stop() { // ctx ended: the deadlines are in the past
		if s != nil {
			unmapShm(s.mem)
		}
		return nil, fmt.Errorf("ring: rank %d: shared-memory handshake: %w", rank, context.Cause(ctx))
	}
	setDeadlines(time.Time{})
	return s, err
}

// The offer: magic, 1 if a segment is offered, rank 0's PID and the
// segment's descriptor, its size, the nonce it holds, rank 0's network
// namespace and the host's boot id.
const (
	offerOK     = 4
	offerPID    = 8
	offerFD     = 12
	offerSize   = 16
	offerNonce  = 24
	offerNetNS  = 40
	offerBootID = 48
	bootIDBytes = 36
)

// bootIDField is the boot id as the offer carries it: zeros where the
// host does not say (then the nonce alone tells the segment).
func bootIDField() []byte {
	b := make([]byte, bootIDBytes)
	copy(b, bootID())
	return b
}

// answerShm is a rank's side of the handshake: it maps the segment rank 0
// offers where it can, says so, and takes rank 0's verdict.
func answerShm(rank int, conns []net.Conn, opts Options) (*shm, error) {
	n := len(conns)
	_, total := shmLayout(n)
	var offer [offerBytes]byte
	if _, err := io.ReadFull(conns[0], offer[:]); err != nil {
		return nil, fmt.Errorf("ring: rank %d: reading rank 0's shared-memory offer: %w", rank, err)
	}
	ok := binary.LittleEndian.Uint32(offer[offerOK:])
	if binary.LittleEndian.Uint32(offer[0:]) != shmMagic || ok > 1 {
		return nil, fmt.Errorf("ring: rank %d: %w: corrupt shared-memory offer from rank 0", rank, nccl.ErrMismatch)
	}
	var mem []byte
	pid, fd := int(binary.LittleEndian.Uint32(offer[offerPID:])), int(binary.LittleEndian.Uint32(offer[offerFD:]))
	// Only a segment of this group's size, offered from this host (boot
	// id) and network namespace, is opened, and only kept when it holds
	// the nonce offered: PIDs and descriptors of another host mean
	// something else here.
	if shmSupported && !opts.DisableSharedMemory && ok == 1 && pid > 0 &&
		binary.LittleEndian.Uint64(offer[offerSize:]) == uint64(total) &&
		binary.LittleEndian.Uint64(offer[offerNetNS:]) == netNamespace() &&
		string(offer[offerBootID:offerBootID+bootIDBytes]) == string(bootIDField()) {
		m, err := openShm(pid, fd, total)
		switch {
		case err != nil:
			opts.Logger.Debug("ring: no shared memory with rank 0", "rank", rank, "err", err)
		case binary.LittleEndian.Uint32(m[0:]) != shmMagic || binary.LittleEndian.Uint32(m[4:]) != uint32(n) ||
			string(m[offNonce:offNonce+16]) != string(offer[offerNonce:offerNonce+16]):
			unmapShm(m)
		default:
			mem = m
		}
	}
	reply := []byte{shmNo}
	switch {
	case mem != nil && pid == os.Getpid():
		reply[0] = shmInProcess
	case mem != nil:
		reply[0] = shmYes
	}
	verdict := []byte{shmNo}
	_, err := conns[0].Write(reply)
	if err == nil {
		_, err = io.ReadFull(conns[0], verdict)
	}
	switch {
	case err != nil:
		err = fmt.Errorf("ring: rank %d: shared-memory handshake with rank 0: %w", rank, err)
	case verdict[0] != shmNo && verdict[0] != reply[0] && !(verdict[0] == shmYes && reply[0] == shmInProcess):
		err = fmt.Errorf("ring: rank %d: %w: rank 0's shared-memory verdict %d after this rank answered %d", rank, nccl.ErrMismatch, verdict[0], reply[0])
	}
	if err != nil || verdict[0] == shmNo {
		if mem != nil {
			unmapShm(mem)
		}
		return nil, err
	}
	return newShm(mem, rank, n, verdict[0] == shmInProcess), nil
}

// offerShm is rank 0's side: it makes the segment, offers it to every
// peer and tells them whether all mapped it.
func offerShm(conns []net.Conn, opts Options) (*shm, error) {
	n := len(conns)
	_, total := shmLayout(n)
	var offer [offerBytes]byte
	binary.LittleEndian.PutUint32(offer[0:], shmMagic)
	var mem []byte
	if shmSupported && !opts.DisableSharedMemory && n > 1 {
		m, fd, err := createShm(total)
		if err != nil {
			opts.Logger.Debug("ring: no shared memory segment", "err", err)
		} else {
			// Peers open the descriptor through /proc until the verdict;
			// after it the mappings alone keep the memory.
			defer closeFD(fd)
			mem = m
			binary.LittleEndian.PutUint32(mem[0:], shmMagic)
			binary.LittleEndian.PutUint32(mem[4:], uint32(n))
			rand.Read(mem[offNonce : offNonce+16])
			binary.LittleEndian.PutUint32(offer[offerOK:], 1)
			binary.LittleEndian.PutUint32(offer[offerPID:], uint32(os.Getpid()))
			binary.LittleEndian.PutUint32(offer[offerFD:], uint32(fd))
			binary.LittleEndian.PutUint64(offer[offerSize:], uint64(total))
			copy(offer[offerNonce:offerNonce+16], mem[offNonce:offNonce+16])
			binary.LittleEndian.PutUint64(offer[offerNetNS:], netNamespace())
			copy(offer[offerBootID:offerBootID+bootIDBytes], bootIDField())
		}
	}
	var errs []error
	for p := 1; p < n; p++ {
		if _, err := conns[p].Write(offer[:]); err != nil {
			errs = append(errs, fmt.Errorf("rank %d: %w", p, err))
		}
	}
	all, inProcess := mem != nil, true
	for p := 1; p < n && len(errs) == 0; p++ {
		var b [1]byte
		if _, err := io.ReadFull(conns[p], b[:]); err != nil {
			errs = append(errs, fmt.Errorf("rank %d: %w", p, err))
		} else if b[0] > shmInProcess {
			errs = append(errs, fmt.Errorf("rank %d: %w: shared-memory answer %d", p, nccl.ErrMismatch, b[0]))
		}
		all = all && b[0] != shmNo
		inProcess = inProcess && b[0] == shmInProcess
	}
	verdict := []byte{shmNo}
	switch {
	case all && len(errs) == 0 && inProcess:
		verdict[0] = shmInProcess
	case all && len(errs) == 0:
		verdict[0] = shmYes
	}
	for p := 1; p < n && len(errs) == 0; p++ {
		if _, err := conns[p].Write(verdict); err != nil {
			errs = append(errs, fmt.Errorf("rank %d: %w", p, err))
		}
	}
	if len(errs) > 0 || verdict[0] == shmNo {
		if mem != nil {
			unmapShm(mem)
		}
		if len(errs) > 0 {
			return nil, fmt.Errorf("ring: rank 0: shared-memory handshake: %w", errors.Join(errs...))
		}
		return nil, nil
	}
	return newShm(mem, 0, n, inProcess), nil
}
