// Package kvtransfer moves a request's KV cache from the ranks of a prefill
// group to the ranks of a decode group, over a raw TCP data plane that shares
// the decode rank's gRPC port, or over the KVTransfer gRPC service
// (proto/tandem/v1/worker.proto) where the raw one is not served.
//
// # Roles
//
// Every prefill rank runs a [Sender] and calls [Sender.Push] once per decode
// rank it feeds (parallel.KVTransfers says which KV heads go where). Push
// reads the rank's KV one layer at a time from a [Source] and streams it
// while later layers may still be computing. Every decode rank serves a
// [Receiver]: register it with tandemv1.RegisterKVTransferServer on a server
// built with [ServerOptions], split the server's listener with [Mux], serve
// gRPC on one side and [Receiver.ServeRaw] on the other. The decode path
// calls [Receiver.Await] to collect the assembled KV once every source rank's
// share has arrived and verified.
//
// # Chunks
//
// One Push sends one stream of KVChunk messages (raw frames or a gRPC client
// stream), one stream per (request, attempt, prefill rank, decode rank). A chunk is a block of token
// positions of one layer for all the heads the stream carries, keys then
// values, little-endian elements of the sending cache's dtype (float32,
// bfloat16 or float16, named in the chunk), with a CRC-32C of the payload.
// A receiver assembles its own cache's dtype ([ReceiverOptions].DType):
// chunks of another are converted once, as they are written into place (a
// 16-bit type widened exactly, float32 rounded to nearest even), so a bf16
// prefill group ships half the bytes to an fp32 decode group. A chunk never
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
// The receiver answers a stream when the sender ends it. KVAck.complete is
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
// A broken stream (a connection that fails, including one whose peer dies
// mid-stream) or an incomplete ack makes Push resend the whole stream
// with the same attempt number, up to SenderOptions.MaxAttempts streams. The
// receiver lets the newer stream from the same (request, attempt, source rank)
// replace the older one; the data is identical, so nothing verified is lost.
// Push keeps every layer it has read, so the Source is still asked for each
// layer once. When Push gives up it returns an error wrapping
// [ErrTransferFailed]; the caller then starts a new attempt (a higher attempt
// number, which makes receivers discard everything buffered for lower ones)
// or recomputes the prefill on the decode group.
//
// # Raw TCP
//
// gRPC costs several times raw TCP's CPU per byte (16 KiB HTTP/2 frames, a
// copy into and out of its buffers), so Push sends over a plain TCP
// connection by default. [Mux] tells the two apart by a connection's first
// bytes: a Sender opens with a 42-byte hello ([RawHello]) that starts "TANDEMKV1\n"
// (anything else, such as the HTTP/2 client preface, goes to gRPC), and the
// receiver answers "TANDEMKV1\n". All integers below are little-endian.
//
// A stream is a sequence of frames: a u32 header length, a u32 payload
// length, the header (a protobuf KVChunk with every field but payload,
// crc32c included) and the payload. A frame with both lengths 0 ends the
// stream; the receiver answers with a u32 length and a protobuf KVAck, with
// the meaning and checks described above. The connection then carries the
// next stream; a Sender keeps a few idle connections per address and drops a
// connection on any error. A frame whose lengths are out of bounds, or whose
// header does not parse, makes the receiver hang up.
//
// The sender writes each chunk with one writev of its frame header and views
// of the layer data, while a second goroutine reads layers from the Source
// and checksums chunks two ahead. The receiver reads a payload of whole rows in
// its own dtype (all the heads it holds) straight into the request's layer
// buffer and checksums it as it lands; a bad checksum fails the chunk and the
// retry rewrites the region. Other payloads (some of its heads, the other
// dtype) go through a scratch buffer, as over gRPC. While a chunk is read into place
// the request's buffers are pinned: Await does not hand them out and no
// other chunk is written to that request until the read ends.
//
// Push's ctx bounds a raw stream: its deadline is the connection's, and the
// connection is closed when ctx ends. The receiver gives a frame that has
// begun a minute to arrive. When a destination answers the hello with
// anything else (a receiver served by gRPC alone), Push sends that stream,
// and that address's streams for a minute, over gRPC, without counting an
// attempt; SenderOptions.DisableRaw always sends over gRPC. Interceptors
// and other SenderOptions.DialOptions apply to gRPC streams only.
//
// # Performance
//
// Over gRPC the sender marshals chunks itself, pointing gRPC at the layer
// data instead of copying it into a protobuf message, and the receiver
// decodes KVChunk into one reused payload buffer (the codec installed by
// [ServerOptions]; without it the standard protobuf codec is used and is
// merely slower). Flow-control windows and socket buffers are raised on both
// ends so one stream can fill a fast link; raw connections use 4 MiB socket
// buffers. BenchmarkKVTransfer compares both transports with raw TCP on the
// same machine.
//
// # Memory
//
// A request's layer buffers are sized once per layer (senders send a
// layer's last tokens first). Layers an Await returned come back with
// [Receiver.Recycle] once the caller has copied them into its cache, and
// serve later requests, so a busy rank does not allocate, zero and page in
// a prompt's KV for every request. Everything buffered and not yet claimed
// is bounded by ReceiverOptions.MaxBufferedBytes: a chunk that would pass
// it is rejected, so a peer cannot make the receiver allocate without
// limit. A request claimed by Await or dropped is remembered for the TTL,
// and late or retried streams for it are refused rather than buffered
// again.
package kvtransfer
