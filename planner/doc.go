// Package planner answers `tandem plan`: given a model's shape, a
// hardware profile, a number of GPUs (and nodes joined by a link) and a
// workload with SLOs, it lists the deployments that fit — TP degree per
// role, number of prefill and decode groups, unified against
// disaggregated — simulates each (package simulator, priced by package
// costmodel), ranks them by goodput per GPU, and writes the winner as
// Helm values for deploy/helm/tandem.
//
// Models are config.json shapes: a model directory, a model/preset
// name, or one of the public shapes embedded from shapes/.
//
// It imports costmodel, simulator, model and model/preset; it must
// never import the engine, worker, coordinator or any backend.
package planner
