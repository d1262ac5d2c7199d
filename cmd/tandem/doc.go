// Command tandem is the one binary of Tandem: every role and tool is a
// subcommand (see `tandem --help`).
//
//   - up: a whole cluster on this machine (embedded etcd, the coordinator
//     in this process, one worker process per rank under worker/supervisor)
//   - coordinator, worker: the processes of a real cluster
//   - generate: one request, to a cluster (--addr) or in this process
//     (--local, with --tp N ranks as child processes)
//   - bench, bench compare: load against deployments, and side by side
//   - trace show, trace export: one request's cross-node timeline
//   - plan (calibrate, validate): deployments simulated and ranked
//   - model, tokenize, certs: presets, the tokenizer, the cluster's CA
//   - link-reaper: a hidden helper of --link that removes a network
//     namespace set whose owner died
//
// Each subcommand lives in a file of its name; a bad flag gets an error
// naming it (up and worker check all of theirs before starting
// anything). The command's package is
// main: nothing imports it. It may import every package of the module;
// its tests run the binary's own subcommands as child processes (see
// TestMain), so end-to-end tests exercise what a user runs.
package main
