// Package kvtransfer moves a request's KV cache from the ranks of a prefill
// group to the ranks of a decode group over the KVTransfer gRPC service
// (proto/tandem/v1/worker.proto).
//
// # Roles
//
// Every prefill rank runs a [Sender] and calls [Sender.Push] once per decode
// rank it feeds (parallel.KVTransfers says which KV heads go where). Push
// reads the rank's KV one layer at a time from a [Source] and streams it
// while later layers may still be computing. Every decode rank serves a
// [Receiver] (register it with tandemv1.RegisterKVTransferServer on a server
// built with [ServerOptions]); the decode path calls [Receiver.Await] to
// collect the assembled KV once every source rank's share has arrived and
// verified.
//
// # Chunks
//
// One Push is one gRPC client stream of KVChunk messages, one stream per
// (request, attempt, prefill rank, decode rank). A chunk is a block of token
// positions of one layer for all the heads the stream carries, keys then
// values, little-endian float32, with a CRC-32C of the payload. A chunk never
// spans layers: the sender reads and ships layers as prefill finishes them,
// the receiver can write a chunk straight into that layer's buffer with one
// bounds check, and a damaged chunk costs one block of one layer, not a
// boundary-straddling piece of two. Chunks default to 1 MiB of payload, large
// enough that per-message costs vanish next to copying.
//
// Within a layer the sender sends token blocks from the last one down. KVChunk
// carries no total token count, so the first chunk a receiver sees has
// token_end equal to the prompt length and it sizes each layer buffer exactly
// once. Chunks in any other order are still accepted (the buffer grows).
//
// # Acks
//
// The receiver answers a stream when the sender closes it. KVAck.complete is
// true only when chunks 0..chunk_count-1 each arrived once, were framed for
// this rank, this request's current attempt and heads this rank holds, and
// matched their checksum: the KV of that (request, source rank) is then in
// place. Otherwise failed_chunks lists the chunks rejected (bad checksum,
// shape, size, head or token range, stale attempt, wrong dest_rank) and
// missing_chunks those that never came. Await only returns KV covered by
// complete streams.
//
// # Retries and attempts
//
// A broken stream or an incomplete ack makes Push resend the whole stream
// with the same attempt number, up to SenderOptions.MaxAttempts streams. The
// receiver lets the newer stream from the same (request, attempt, source rank)
// replace the older one; the data is identical, so nothing verified is lost.
// Push keeps every layer it has read, so the Source is still asked for each
// layer once. When Push gives up it returns an error wrapping
// [ErrTransferFailed]; the caller then starts a new attempt (a higher attempt
// number, which makes receivers discard everything buffered for lower ones)
// or recomputes the prefill on the decode group.
//
// # Performance
//
// The sender marshals chunks itself, pointing gRPC at the layer data instead
// of copying it into a protobuf message, and the receiver decodes KVChunk into
// one reused payload buffer (the codec installed by [ServerOptions]; without
// it the standard protobuf codec is used and is merely slower). Flow-control
// windows and socket buffers are raised on both ends so one stream can fill a
// fast link. BenchmarkKVTransfer compares the result with raw TCP on the same
// machine.
package kvtransfer
