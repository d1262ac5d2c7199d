// Package supervisor runs the rank processes of worker groups on one
// machine and keeps each group alive as one unit. `tandem up` runs every
// group of its cluster through it, `tandem generate --local --tp N` the
// ranks that follow its in-process rank 0, and `tandem worker
// --local-ranks N` the ranks of a pod (with restarts off: Kubernetes
// restarts the pod).
//
// A group's ranks live and die together, as a LeaderWorkerSet's pods do:
// when any rank exits, or (with etcd) any rank's registration lapses while
// its process still runs — a paused or cut-off rank the others would wait
// for forever — the supervisor stops every other rank of the group
// (SIGTERM, SIGKILL after Options.StopTimeout) and, once all have exited,
// starts the whole group again as a new incarnation. Before the restart
// it clears what the dead incarnation left in etcd (cluster.Forget:
// registrations still on their leases, rendezvous entries), and the new
// ranks meet under their own incarnation number, so nothing of the old
// one is read by the new.
//
// Restarts back off exponentially (Options.Backoff doubling up to
// MaxBackoff). An incarnation that dies within Options.CrashLoopWindow of
// its start is a quick crash; after CrashLoopLimit quick crashes in a row
// the group is left down, logged, and reported on Down. One that ran
// longer resets the count and the backoff.
//
// Every rank process gets SIGKILL from the kernel when its parent dies
// (Linux parent-death signal) and runs in its own process group, so
// neither a killed parent nor a terminal's Ctrl-C leaves a rank behind or
// lets ranks stop before the supervisor stops them in order.
//
// The package imports cluster only; it must never import worker, engine
// or coordinator (it runs processes, not models).
package supervisor
