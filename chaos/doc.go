// Package chaos is Tandem's chaos suite: it runs a cluster of real
// processes on loopback, drives it with the load generator of package
// bench, and meanwhile injects a schedule of faults, one at a time:
//
//   - kill-rank: SIGKILL of a random rank of a random group;
//   - kill-prefill-leader: SIGKILL of rank 0 of a prefill group;
//   - kill-coordinator: SIGKILL of the coordinator process, restarted on
//     the same ports;
//   - kill-etcd-member: one member of a 3-member etcd crashes (once per
//     run, so a quorum stays);
//   - kv-corrupt, kv-drop, kv-delay: the proxy in front of every rank
//     damages, drops or holds back the next KV frames of the raw data
//     plane (gRPC passes untouched);
//   - pause-rank: SIGSTOP of a random rank past its registration lease,
//     then SIGCONT.
//
// After each fault it waits until the cluster has recovered (every group
// ready again, the coordinator serving them, a probe request answered
// with all its tokens) and records how long that took. At the end it
// classifies every request: completed with every token, failed with an
// explicit error (by reason, and whether a healthy group of each role and
// the coordinator were there when it failed), hung (no answer by its
// deadline) or lost (a stream that ended without all its tokens and
// without an error); and it checks that every group's KV blocks are free
// again (Worker.Stats). Report prints all that, with the time to recover
// per fault kind.
//
// The groups run under worker/supervisor, as `tandem up` runs them; the
// coordinator is a `tandem coordinator` process and etcd runs embedded
// here. Everything it starts is stopped on every path out of Run.
//
// It drives processes from the outside: it must never import the
// coordinator, worker or engine packages.
package chaos
