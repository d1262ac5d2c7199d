// Package tandemv1 is Tandem's API definition: the messages and gRPC
// services of the tandem.v1 protobuf package.
//
// The package holds the .proto files and the Go code generated from them
// (by `make proto`; `make verify-proto` fails when the two disagree), plus
// this doc and a test. It imports only the protobuf and gRPC runtimes, never
// the engine, worker or coordinator, so a client can import it alone.
//
// Three services are defined:
//
//   - Generation (generation.proto): the public API the coordinator serves.
//     Generate streams a request's tokens; ListModels and Health describe
//     the cluster.
//   - Worker (worker.proto): served by rank 0 of each group for the
//     coordinator: Prefill, Decode, Generate (unified groups), Abort, Stats.
//   - KVTransfer (worker.proto): served by every decode rank; Push streams a
//     request's KV cache from a prefill rank, framed and checksummed.
//
// Messages both sides use (SamplingParams, TokenIds, Logprob, TokenTiming,
// FinishReason, Usage, Role) are in common.proto. SamplingParams maps field
// for field onto the engine's SamplingParams.
//
// Time fields are integers of microseconds (suffix _us) where they are per
// token, and google.protobuf.Duration or Timestamp elsewhere.
package tandemv1
