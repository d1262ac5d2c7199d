// Package ring implements nccl.Communicator over TCP between processes,
// with shared memory for the allreduces of ranks on one host, for groups
// without GPUs (and for tests of everything above the collectives).
//
// Ranks listen first (Listen), publish their address (the rendezvous in
// package cluster does that through etcd), then Connect: every pair of
// ranks shares one TCP connection (a full mesh), dialled by the higher
// rank and checked by a handshake carrying the group's id, its size and
// both ranks, so a stray or misconfigured peer is refused with a reason.
// With Options.ServerTLS and ClientTLS every connection is TLS first
// (mutual TLS against the cluster's CA, package pki): a peer the TLS
// configuration refuses is refused at its TLS handshake, before any of
// its bytes is parsed as the ring's, and logged; a rank refused by the
// rank it dials gives up at once. The listener is closed once the group
// is formed, so nothing more can connect.
//
// Every call opens with a 32-byte header to each peer it involves
// (per-pair sequence number, kind, algorithm, element count, dtype,
// root). All ranks of a collective read every header before any data, so
// a mismatch is reported by every rank with the same words, naming both
// sides; data is then read into this rank's own buffers, sized by its own
// call, so a header claiming another shape allocates nothing. Send and
// Recv exchange headers too: the receiver answers the sender, so both see
// a mismatch.
//
// AllReduce of at most Options.SmallMessageBytes (or of fewer elements
// than ranks) takes the latency path, recursive doubling: ranks beyond
// the largest power of two p ≤ n first fold their buffers into ranks
// 0..n-p-1; then log2 p steps, each a swap of whole partial sums with
// rank XOR 2^k; then the folded ranks get the result. Both partners of a
// step add the same two partial sums, so every rank gets the same bits,
// run after run. bf16 is summed in float32 and rounded once. Its frames
// carry, ahead of the data, the headers of every rank they sum, so every
// rank still sees every header; after a disagreement the steps go on
// with headers alone, and every rank on this path reports the mismatch
// in the same words (a rank that made another kind of call may see the
// others' abort, ErrPeerLost, first). Larger buffers take the
// bandwidth-optimal ring: n-1 reduce-scatter steps then n-1 all-gather
// steps, a writer goroutine sending one chunk to the right while the
// caller receives the next from the left and adds it segment by segment.
// bf16 partial sums are rounded to bf16 at each ring step, as NCCL does.
// AllGather and Broadcast send straight to every peer.
//
// Ranks on one host (rank 0's memfd opens through /proc at every peer,
// and every rank is in rank 0's network namespace) sum their allreduces
// through a shared memory segment instead, as NCCL's SHM transport does
// within a node (shm.go): each rank copies its buffer into its slot;
// after a barrier (a futex in the segment, spun on first where every rank
// has a core) every rank sums every slot, or, for buffers whose n copies
// exceed 256 KiB, each sums its 1/n and after a second barrier copies the
// others' sums; buffers larger than the 512 KiB slot go slot by slot,
// alternating two sets of slots. Sums run in a fixed order, so every
// rank gets the same bits. Rank 0 offers the segment once the
// connections are up; one rank that cannot map it, or sets
// Options.DisableSharedMemory, keeps the whole group on TCP. The segment
// is anonymous memory that lives as long as some rank maps it, so a
// killed group leaves nothing behind. Its headers are checked after the
// first barrier, as the sockets' are; a rank waiting in a barrier polls
// its peers' connections now and then, and fails with ErrPeerLost when
// one hung up (a killed or closed rank) or with ErrMismatch when one sent
// bytes (it is in another collective, over TCP).
//
// Any failure breaks the communicator for good and closes all its
// connections, so that the failure reaches every rank: a lost peer
// (closed connection, keepalive or user timeout), a mismatch, ctx ending
// during a call, even a call refused for bad arguments (the peers would
// otherwise wait for it). Calls then return errors wrapping
// nccl.ErrPeerLost, nccl.ErrMismatch, the context's error, and, for every
// later call, nccl.ErrClosed together with the first cause.
//
// This package imports nccl, internal/half and golang.org/x/sys only; it
// must never import the engine, worker or cluster packages.
package ring
