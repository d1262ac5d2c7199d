// Package openai is a bench.Target for any OpenAI-compatible server:
// /v1/completions or /v1/chat/completions with "stream": true, read as
// server-sent events. It measures as vllm bench serve's request functions
// do: time to the first chunk carrying choices, the gap before each
// later such chunk, and the token counts of the usage chunk that
// stream_options.include_usage asks for. Every request carries the
// bench's request id in an X-Request-Id header; a server that echoes it
// (vLLM, Tandem) has filed the request under it, so the output keeps
// it, and otherwise takes the id the server's chunks carry.
//
// The stream is read as the event-stream format defines it (LF, CRLF or
// CR line ends; data fields joined across lines; comments and other
// fields skipped). A request succeeds when it streamed output and ended
// with [DONE] or a finish reason; an "error" event, a chunk holding an
// error object (OpenAI's {"error": {...}} or older vLLM's top-level
// {"object": "error"}) or finish_reason "error" fails it, whatever it
// streamed before, with code STREAM_ERROR and the server's code or type.
//
// It imports bench only; never any other package of Tandem.
package openai
