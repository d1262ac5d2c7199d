// Package netshape gives the processes of a cluster on one machine links
// with the limits of a real network between machines: each process runs
// in a network namespace of its own, joined to a bridge in the caller's
// namespace by a veth pair, and both ends of every pair are shaped with
// tc to a named Profile (InfiniBand, Ethernet, or NVLink, which is not
// shaped). Allreduces and KV transfers between the processes then cross
// a link with a real bandwidth limit, each way, per node, as a NIC port
// into a non-blocking switch has.
//
// New builds a Network: a bridge named tdm<pid><letter>b with an
// address in a free /24 of 10.213.0.0/16 (HostAddr: servers of the caller
// that nodes must reach, such as etcd, listen there), and per node a
// namespace tdm<pid><letter>nN whose "eth0" has the next address.
// Command wraps a command line in `ip netns exec`, which execs it in
// place, so the process keeps its id, its parent and a parent-death
// signal; Do runs a function on a thread inside a node's namespace (for
// sockets a test makes in-process).
//
// Rate: tbf on the namespace's end of the veth limits what the node
// sends, tbf on the bridge's end what it receives. A token bucket lets
// a burst (Profile.Burst: 100 µs at the rate, at least 256 KiB) pass at
// once after an idle spell, which a real port does not; over a transfer
// of many milliseconds that is a few percent at most. The links' MTU is
// 65535, the veth maximum, so the emulator's cost per packet stays low;
// tbf counts bytes, so the rate does not depend on it. A profile faster
// than the machine can move bytes through veth (on a small VM, tens of
// Gb/s) is limited by the machine instead; the benchmarks print both.
//
// Latency: a profile's latency is what the fabric (adapters, one switch
// hop) adds, 1 to 3 µs. It is added with netem on the namespace's end,
// once each way, where the kernel has netem (New tries it). Where it
// has not, nothing else in tc can delay packets (fq with departure times
// and etf are missing on such kernels too) and a user-space relay would
// cost more than it adds, so the latency is not added and Describe says
// so, next to what the path costs by itself: New measures the one-way
// latency between two nodes (TCP ping-pong), typically 5 to 10 µs on a
// VM — the two kernels' TCP stacks, which a real link has on top of its
// fabric latency too. So without netem the emulated latency is lower than
// the real one by the profile's figure, and that is stated, not hidden.
//
// Cleanup: every name carries the owner's prefix, locked (flock) in
// LockDir for the network's lifetime; the kernel drops the lock
// when the owner dies, however it dies. Close stops what still runs in
// the namespaces and removes the namespaces, veths (their qdiscs go with
// them) and the bridge. If the owner dies first, its reaper
// (Options.Reaper: a child process that waits for its stdin pipe to end,
// then calls Reap) removes the network at once; and New, or Sweep,
// removes any network whose lock is free before building a new one.
//
// Why iproute2 commands and not a netlink library: `ip netns exec` is
// needed anyway to start the processes (a Go program cannot setns a whole
// process: setns moves one thread, and the runtime's other threads stay
// behind), so iproute2 is a requirement already; commands keep this
// package free of a new dependency and make every step visible and
// repeatable by hand. Building a network costs about ten short commands
// per node.
//
// It needs Linux, root and iproute2 (Check says what is missing), and
// imports no other Tandem package: the engine layers (worker, engine,
// nccl, kvtransfer, ...) must never be imported here; commands and tests
// put those processes inside the namespaces.
package netshape
