// Package ring implements nccl.Communicator over TCP between processes,
// for groups without GPUs (and for tests of everything above the
// collectives).
//
// Ranks listen first (Listen), publish their address (through etcd, see
// package cluster), then Connect: every pair of ranks shares one TCP
// connection, opened by the higher rank and checked by a handshake
// (group, size, ranks). Every collective starts with a header sent to the
// peers it involves (sequence number, kind, element count, dtype, root or
// peer), so a mismatch between ranks is an error on each rank that sees
// it, naming both sides. AllReduce of small messages (and of any size at
// two ranks) exchanges whole buffers directly, one round trip, and sums
// in rank order so every rank gets the same bits; larger messages use
// the bandwidth-optimal ring (reduce-scatter then all-gather), sending to
// the right neighbour while receiving from the left.
//
// A lost peer (closed connection, TCP keepalive failure) or a cancelled
// context breaks the communicator: all its connections are closed so the
// failure reaches every rank, and calls return errors wrapping
// nccl.ErrPeerLost or the context's error.
//
// This package imports nccl and internal/half only.
package ring
