// Package cluster keeps Tandem's shared state in etcd: an embedded etcd
// cluster of one or more members for `tandem up` and tests (a real
// server, not a stand-in), the client every process dials it with (Dial:
// all endpoints, quick failover and reconnection), and
// the rendezvous through which the ranks of a group find each other
// (rank → collective address or NCCL unique id, under a lease, with a
// deadline that names the missing ranks).
//
// Membership: each worker rank Registers its role, group, rank, TP degree,
// gRPC address, model and KV pool under KeyPrefix+"members/<group>/<rank>",
// tied to a kept-alive lease so a crashed worker disappears when the lease
// expires; a (group, rank) can be held by one live registration only. The
// coordinator's WatchMembership keeps a live, watch-driven view of every
// group, reports when a group is ready (all ranks present and consistent),
// and tolerates malformed entries by counting their rank as missing.
//
// etcd going away stops nothing: a registration keeps its rank through
// the outage (and puts its entry back under a new lease if the old one
// expired meanwhile), a membership keeps its last view; both report
// whether etcd answers (Available) so their owners can say so.
//
// Role is the one typed definition of a group's role; Role.Proto puts it
// on the wire.
//
// It imports only proto (for Role.Proto) of Tandem's; the worker and
// coordinator use it.
package cluster
