// Package worker is one rank's process in a Tandem cluster: it serves the
// rank's gRPC services, registers the rank in etcd, and runs the rank's
// engine.
//
// Rank 0 of a group is its leader. It serves the Worker service to the
// coordinator and owns the engine's scheduler: one goroutine runs the
// continuous-batching loop (new sequences join every step, finished ones
// leave) and every RPC talks to it through commands queued between steps.
// The other ranks follow the step plans rank 0 broadcasts over the group's
// communicator.
//
// Every rank serves the internal Rank service, through which the leader
// moves the rank's own share of a request's KV cache: a prefill group's
// ranks push their heads to the decode ranks that own them (kvtransfer),
// and a decode group's ranks load what arrived into blocks the leader
// reserved, before the request's first decode step. Workers work in token
// ids: the coordinator detokenizes and applies stop strings.
package worker
