package nvidia

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/tandemllm/tandem/nccl"
)

// ncclType maps a buffer's element type to ncclDataType_t.
func ncclType(d nccl.DType) (int32, error) {
	switch d {
	case nccl.F32:
		return ncclFloat32, nil
	case nccl.BF16:
		return ncclBfloat16, nil
	}
	return 0, fmt.Errorf("nvidia: no NCCL type for %v", d)
}

// checkDevice rejects buffers NCCL cannot use: NCCL reads and writes GPU
// memory only, and a host slice handed to it would be a wild pointer.
func checkDevice(what string, b nccl.Buffer) error {
	if b.Host() != nil {
		return fmt.Errorf("nvidia: %s is a host buffer; NCCL needs device memory (nccl.Device) — use nccl/ring for host buffers", what)
	}
	if b.DeviceAddr() == 0 && b.Count() > 0 {
		return fmt.Errorf("nvidia: %s has a nil device address", what)
	}
	_, err := ncclType(b.DType())
	return err
}

func (c *Comm) checkPeer(what string, p int) error {
	if p < 0 || p >= c.size {
		return fmt.Errorf("nvidia: %s %d out of range [0, %d)", what, p, c.size)
	}
	return nil
}

// record reports one call; deferred by every method so failures are
// recorded too.
func (c *Comm) record(kind nccl.Kind, bytes, peer int, start time.Time) {
	if c.rec != nil {
		c.rec.Record(nccl.Call{Kind: kind, Bytes: bytes, Peer: peer, Start: start, Dur: time.Since(start)})
	}
}

// AllReduce sums buf element-wise across ranks, in place.
func (c *Comm) AllReduce(ctx context.Context, buf nccl.Buffer) error {
	defer c.record(nccl.KindAllReduce, buf.Bytes(), -1, time.Now())
	if err := checkDevice("allreduce buffer", buf); err != nil {
		return err
	}
	dt, _ := ncclType(buf.DType())
	a := buf.DeviceAddr()
	return c.run(ctx, nccl.KindAllReduce, buf.Count(), func() (string, Result) {
		return "ncclAllReduce", c.lib.api.allReduce(a, a, uint(buf.Count()), dt, ncclSum, c.comm, c.stream)
	})
}

// AllGather concatenates every rank's send into recv in rank order. send
// may be recv's own slice for this rank (NCCL's in-place form).
func (c *Comm) AllGather(ctx context.Context, send, recv nccl.Buffer) error {
	defer c.record(nccl.KindAllGather, send.Bytes(), -1, time.Now())
	if err := checkDevice("allgather send buffer", send); err != nil {
		return err
	}
	if err := checkDevice("allgather recv buffer", recv); err != nil {
		return err
	}
	if send.DType() != recv.DType() {
		return fmt.Errorf("nvidia: allgather send is %v, recv is %v", send.DType(), recv.DType())
	}
	if recv.Count() != c.size*send.Count() {
		return fmt.Errorf("nvidia: allgather recv holds %d elements, want %d ranks × %d", recv.Count(), c.size, send.Count())
	}
	dt, _ := ncclType(send.DType())
	return c.run(ctx, nccl.KindAllGather, send.Count(), func() (string, Result) {
		return "ncclAllGather", c.lib.api.allGather(send.DeviceAddr(), recv.DeviceAddr(), uint(send.Count()), dt, c.comm, c.stream)
	})
}

// Broadcast copies root's buf into every other rank's buf.
func (c *Comm) Broadcast(ctx context.Context, buf nccl.Buffer, root int) error {
	defer c.record(nccl.KindBroadcast, buf.Bytes(), root, time.Now())
	if err := checkDevice("broadcast buffer", buf); err != nil {
		return err
	}
	if err := c.checkPeer("broadcast root", root); err != nil {
		return err
	}
	dt, _ := ncclType(buf.DType())
	a := buf.DeviceAddr()
	return c.run(ctx, nccl.KindBroadcast, buf.Count(), func() (string, Result) {
		return "ncclBroadcast", c.lib.api.broadcast(a, a, uint(buf.Count()), dt, int32(root), c.comm, c.stream)
	})
}

// Send moves buf to peer, which must call Recv with a matching buffer.
func (c *Comm) Send(ctx context.Context, buf nccl.Buffer, peer int) error {
	defer c.record(nccl.KindSend, buf.Bytes(), peer, time.Now())
	if err := c.checkP2P("send", buf, peer); err != nil {
		return err
	}
	dt, _ := ncclType(buf.DType())
	return c.run(ctx, nccl.KindSend, buf.Count(), func() (string, Result) {
		return "ncclSend", c.lib.api.send(buf.DeviceAddr(), uint(buf.Count()), dt, int32(peer), c.comm, c.stream)
	})
}

// Recv fills buf from peer's matching Send.
func (c *Comm) Recv(ctx context.Context, buf nccl.Buffer, peer int) error {
	defer c.record(nccl.KindRecv, buf.Bytes(), peer, time.Now())
	if err := c.checkP2P("recv", buf, peer); err != nil {
		return err
	}
	dt, _ := ncclType(buf.DType())
	return c.run(ctx, nccl.KindRecv, buf.Count(), func() (string, Result) {
		return "ncclRecv", c.lib.api.recv(buf.DeviceAddr(), uint(buf.Count()), dt, int32(peer), c.comm, c.stream)
	})
}

func (c *Comm) checkP2P(what string, buf nccl.Buffer, peer int) error {
	if err := checkDevice(what+" buffer", buf); err != nil {
		return err
	}
	if err := c.checkPeer(what+" peer", peer); err != nil {
		return err
	}
	if peer == c.rank {
		return fmt.Errorf("nvidia: %s to self (rank %d)", what, peer)
	}
	return nil
}

// Barrier is an allreduce of one float: NCCL has no barrier, and a
// one-element collective completes on a rank only once every rank has
// joined it.
func (c *Comm) Barrier(ctx context.Context) error {
	defer c.record(nccl.KindBarrier, 0, -1, time.Now())
	return c.run(ctx, nccl.KindBarrier, 1, func() (string, Result) {
		return "ncclAllReduce", c.lib.api.allReduce(c.scratch, c.scratch, 1, ncclFloat32, ncclSum, c.comm, c.stream)
	})
}

// run launches one NCCL call on this rank's device and waits for it.
// Any failure after the launch aborts the communicator: the collective
// may be half done, and peers waiting on this rank must see an error
// rather than hang.
func (c *Comm) run(ctx context.Context, kind nccl.Kind, count int, launch func() (string, Result)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nvidia: %s: %w", kind, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen || c.closing.Load() {
		return fmt.Errorf("nvidia: %s: %w", kind, nccl.ErrClosed)
	}
	if count == 0 {
		return nil // every rank skips alike; NCCL would reject nil pointers
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cu := c.lib.cu
	if err := cu.check("cuCtxSetCurrent", cu.ctxSetCurrent(c.cctx)); err != nil {
		c.abort()
		return fmt.Errorf("nvidia: %s: %w", kind, err)
	}
	fn, r := launch()
	if r != Success && r != InProgress {
		err := c.lib.err(fn, r, c.comm)
		c.abort()
		return fmt.Errorf("nvidia: %s: %w", kind, err)
	}
	if err := c.wait(ctx, r == InProgress); err != nil {
		c.abort()
		return fmt.Errorf("nvidia: %s: %w", kind, err)
	}
	return nil
}

// wait polls until the stream has drained. It never blocks inside the
// driver, so between polls it can notice an NCCL async error (a peer
// died), Close, or ctx. enqueuing is true when a non-blocking
// communicator returned ncclInProgress: the work is not on the stream
// yet, and an idle stream means nothing until NCCL says it is.
func (c *Comm) wait(ctx context.Context, enqueuing bool) error {
	cu, api := c.lib.cu, &c.lib.api
	spinUntil := time.Now().Add(c.spin)
	for {
		if !enqueuing {
			switch q := cu.streamQuery(c.stream); q {
			case cudaSuccess:
				return nil
			case cudaNotReady:
			default:
				return cu.check("cuStreamQuery", q)
			}
		}
		var ae Result
		if r := api.commGetAsyncErr(c.comm, &ae); r != Success {
			return c.lib.err("ncclCommGetAsyncError", r, c.comm)
		}
		switch ae {
		case Success:
			enqueuing = false
		case InProgress:
		default:
			return c.lib.err("ncclCommGetAsyncError", ae, c.comm)
		}
		if c.closing.Load() {
			return fmt.Errorf("closed while waiting, communicator aborted: %w", nccl.ErrClosed)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w; communicator aborted: %w", err, nccl.ErrClosed)
		}
		if time.Now().Before(spinUntil) {
			runtime.Gosched()
		} else {
			time.Sleep(c.poll)
		}
	}
}
