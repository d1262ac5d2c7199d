// Package cluster keeps Tandem's shared state in etcd: an embedded etcd
// server for `tandem up` and tests (a real server, not a stand-in), and
// the rendezvous through which the ranks of a group find each other
// (rank → collective address or NCCL unique id, under a lease, with a
// deadline that names the missing ranks).
//
// It imports nothing of Tandem's; the worker and coordinator use it.
package cluster
