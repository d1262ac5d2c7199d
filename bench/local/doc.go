// Package local starts and stops whole Tandem clusters on this machine
// for load tests: each Cluster is a `tandem up` child process (the real
// binary, with its own embedded etcd and worker processes) on free
// ports, ready when its coordinator reports every group serving.
//
// Stop ends the child and, through it, every worker; a child whose
// parent dies gets SIGTERM (Linux), so no process outlives the load test.
// The child runs in its own process group, so a Ctrl-C at the terminal
// reaches the load test, which stops its clusters in order.
//
// It imports the generated proto package only; never the coordinator,
// worker or engine.
package local
