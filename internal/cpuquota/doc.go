// Package cpuquota says how many CPUs a process may keep busy: the CPUs
// it may run on, or fewer when the CPU bandwidth limit of its cgroup (a
// container's CPU limit: cgroup v2 cpu.max, or v1's CFS quota and
// period) is lower, the strictest of its own cgroup's and its
// ancestors'. Thread pools sized from it do not oversubscribe a pod
// whose CPU limit is below the node's cores.
//
// It imports only the standard library and must never import any other
// Tandem package.
package cpuquota
