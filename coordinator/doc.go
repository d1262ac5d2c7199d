// Package coordinator is the coordinator process's logic: the public gRPC
// Generation service (proto/tandem/v1/generation.proto), the
// OpenAI-compatible HTTP API, routing of requests to worker groups, and
// the lifecycle of every request.
//
// # Requests
//
// Both APIs take one path. A request is validated (errors are
// INVALID_ARGUMENT, or HTTP 400, and name the field), its text prompt is
// tokenized, and it is admitted if fewer than Options.MaxInFlight are
// (else RESOURCE_EXHAUSTED / HTTP 429 at once). With Options.QueueTimeout,
// the first group it goes to drops it, RESOURCE_EXHAUSTED / HTTP 429 too,
// if it is still queued there that long after its arrival (the group
// checks before every step), so that under overload requests are refused
// rather than left to wait. An unknown model is
// INVALID_ARGUMENT naming `model`, not NOT_FOUND, so that every bad field
// gets the same code. The first message of the stream carries the
// request id as soon as the request is admitted and routed.
//
// Workers neither detokenize nor apply stop strings: the coordinator
// decodes tokens incrementally (never half a UTF-8 character, special
// tokens left out), holds back text that could still grow into a stop
// string, and when one appears cuts the text before it, aborts the
// request on the group still running it and ends with FINISH_REASON_STOP.
// The token completing the stop string is the last token returned.
// It also fills the text and bytes of log-probability entries.
//
// A request ends early when the client cancels (or its deadline passes)
// or when GenerateRequest.timeout passes (FINISH_REASON_TIMEOUT with the
// tokens so far). Whatever the end, every group that may still hold the
// request is sent Worker.Abort on a fresh context.
//
// # Migration
//
// When a group fails a request (a worker call or stream fails with
// UNAVAILABLE, CANCELLED or ABORTED, a stream ends without a finish
// reason, or the group leaves the cluster; a prefill group counts until
// the decode group's first message, since its KV may still be on the
// way), the request moves: it runs again on other groups with its prompt
// followed by the tokens the client already has and max_tokens less
// those, and the client's stream goes on with no token repeated or
// missing. Workers draw each token from the request's seed and the
// token's position (the coordinator draws a seed for a request that has
// none), so greedy and seeded requests produce the text an uninterrupted
// run would; the coordinator's detokenizer, stop strings, logprobs and
// usage simply continue. The new groups are a prefill and a decode group,
// else a unified group, else a decode group alone recomputing the prompt
// (Worker.Generate), never one that failed the request; the failed group
// takes no new request until its Stats answer again. A request moves at
// most Options.MigrationLimit times (default 3), and looks for healthy
// groups for at most Options.MigrationTimeout after its first failure;
// then it ends with UNAVAILABLE naming the group. Each attempt has its
// own id on the workers (request id, then "#migration1", ...), so a group
// still holding an earlier attempt cannot confuse the two. Each move is a
// "migration" span, a count in tandem:request_migrations_total by reason,
// and an entry in the request's trace. Other worker errors are passed on
// with their code before any token was sent, and as FINISH_REASON_ERROR
// after.
//
// # Routing
//
// Groups come from the cluster's membership in etcd; a group is routed to
// only when all its ranks have joined, it serves the model (its
// registered model is ModelName, or a path of that base name), and its
// last Stats call answered. Every ready group's Stats are polled each
// StatsInterval; a group's load is its last Stats adjusted by the requests
// routed to it since that call started and those that ended since it
// answered. When a prefill and a decode group are ready, requests
// are disaggregated: a prefill group computes the prompt and streams its
// KV to a decode group, which then generates the rest. Otherwise a
// unified group runs the whole request. Connections are made once per
// worker address and closed when no group uses the address any more.
//
// Within each role the groups are scored by the prefix of the prompt they
// already hold in their prefix caches and by their load together
// (RoutingOptions, flags --prefix-score-weight, --load-score-weight and
// --group-max-requests):
//
//	score = PrefixWeight · cached/prompt − LoadWeight · busy
//
// cached is the leading prompt tokens the group holds in whole blocks of
// its block size, short of the block holding the last token (which is
// always computed, or sent), as the prefix index knows; busy is in
// [0, 1]: for a prefill group its pending prompt tokens (its last Stats
// plus the uncached prompt tokens sent since that poll and not yet
// answered) over the most of any candidate; for a decode group the share
// of its KV blocks in use (its last Stats less the blocks of requests
// routed since that poll); for a unified group its running and waiting
// requests over the most of any candidate. The highest score wins (the
// defaults, 2 and 1, let a group holding the whole prompt win over an
// idle one unless it is the busiest by far). A group at its load limit,
// MaxRequests requests in flight or (decode and unified) fewer free KV
// blocks than the request needs beyond those it holds, is skipped while
// another is not. Equal scores go to the least loaded by the role's own order
// (prefill: fewest pending tokens, then fewest requests; decode: most
// free blocks, then fewest running, then fewest waiting; unified: fewest
// requests, then most free blocks), then to the first by name. A decode
// group is told, in KVDestination.skip_tokens, to keep the prefix it
// holds: the prefill group sends only the rest, and if the decode group
// has evicted some of it meanwhile it recomputes the prompt.
//
// The prefix index follows every group's KV events (Worker.KVEvents): a
// snapshot of the group's cache when the stream opens, then the hashes of
// the blocks it stores and evicts, in numbered batches. A batch whose
// number does not follow the last one means batches were lost: the
// coordinator forgets what it knew of the group and opens the stream
// again, whose snapshot resynchronises it (tandem:kv_events_resyncs_total);
// a stream that breaks is reopened the same way after half a second. The
// index may lag the caches by a batch or two: a stale entry only sends a
// request to a group that computes (or receives) more of it than expected,
// never wrong output, since each group checks its own cache.
//
// # OpenAI API
//
// POST /v1/completions and /v1/chat/completions accept OpenAI's
// parameters: model, prompt (a string, token ids, or a one-element array
// of either) or messages, max_tokens (chat also max_completion_tokens),
// temperature (default 1), top_p (default 1; 0 keeps only the most likely
// token, as OpenAI reads it), seed, stop (a string or an array of at most
// 16 strings of at most 512 bytes), n (only 1), stream with
// stream_options.include_usage (stream_options without stream is a 400), and
// logprobs (completions: an integer of top alternatives; chat: a boolean
// with top_logprobs). vLLM's extensions top_k (-1 for all), ignore_eos
// and stop_token_ids are accepted too. max_tokens defaults to 16 for
// completions and to the rest of the context for chat, as in vLLM.
// Parameters Tandem cannot honour (echo, suffix, best_of above 1,
// non-zero penalties, logit_bias, tools, response formats other than
// text) are refused with 400, never silently dropped; unknown ones are
// ignored, as OpenAI's API does. Bodies are limited to 8 MiB. An
// X-Request-Id header, as vLLM takes it, is the request's id (checked as
// GenerateRequest.request_id is: 400 naming the header when too long or
// not printable, 409 while a request of that id is in flight), so its
// trace is found by it; every response echoes it, and a request without
// one gets the id the coordinator made in its X-Request-Id and its
// "cmpl-"/"chatcmpl-" id. finish_reason
// is one of OpenAI's values: a request aborted by a worker reports "stop". Streams are server-sent events
// ("data: {...}\n\n", ending with "data: [DONE]\n\n"); their headers go
// out with the first output, so a failure before it still gets an HTTP
// status. Errors are OpenAI's JSON ({"error": {"message", "type",
// "param", "code"}}): 400 for bad input, 404 for unknown routes, 429 when
// the coordinator is full, 503 when no group can serve. GET /v1/models
// lists the model. GET /readyz answers 200 when the cluster can serve the
// model and 503 otherwise, with the ready and registered groups of each
// role; GET /healthz (and /livez) answers 200 while the process serves
// HTTP. They are the readiness and liveness probes of the Helm chart. On
// the gRPC side, Register adds grpc.health.v1.Health, SERVING exactly when
// /readyz is 200 (for "" and tandem.v1.Generation), and server reflection.
//
// # Authentication and limits
//
// With Options.APIKeys every request needs a key the set accepts:
// "Authorization: Bearer KEY" over HTTP (RequireAPIKey wraps the whole
// HTTP surface: a missing or wrong key gets 401 with an OpenAI error of
// code invalid_api_key before the body is read) and the metadata
// "authorization: Bearer KEY" over gRPC (ServerOptions' interceptors:
// UNAUTHENTICATED). The probes, /metrics and the health services stay open
// unless ProtectMetrics. Refusals never repeat what the client sent, and
// are counted in tandem:unauthenticated_requests_total{api}. A request
// asks for at most MaxModelLen positions (prompt plus max_tokens; a text
// prompt longer than that many of the tokenizer's longest tokens is
// refused untokenized), and a client that reads nothing for WriteTimeout
// is cut off: its request is aborted on its groups, which free its KV at
// once (an HTTP write fails at its deadline and the connection closes; a
// gRPC Send cannot be interrupted, so the request is cancelled beneath it
// and the stream ends with DEADLINE_EXCEEDED when Send returns).
//
// # Chat template
//
// Chat messages (roles system, developer, user, assistant, tool; content a
// string or text parts) are rendered with one of two fixed templates. If
// the tokenizer has Llama-3's header tokens (<|start_header_id|>,
// <|end_header_id|>, <|eot_id|>), Llama-3's format is used, the prompt
// tokenized without added special tokens, and <|eot_id|> ends the reply:
//
//	<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>...
//	<|start_header_id|>assistant<|end_header_id|>\n\n
//
// Otherwise each message is a line "{role}: {content}\n" and the prompt
// ends with "assistant:", tokenized with the tokenizer's special tokens.
package coordinator
