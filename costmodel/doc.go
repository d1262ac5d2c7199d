// Package costmodel predicts how long one step of a tensor-parallel group
// takes, from the model's shape and a hardware profile: the bytes of
// weights and KV cache each rank reads against memory bandwidth, the
// FLOPs it runs against peak compute (each with an efficiency factor),
// two allreduces per layer by NCCL's ring and tree cost model (or
// Tandem's TCP ring on CPUs), the gather of the logits, host sampling, and
// the KV cache moving from a prefill group to a decode group, overlapped
// layer by layer with the prefill.
//
// Hardware and link profiles are data files embedded from data/, each
// number with its public source beside it. Efficiency factors start at
// the profile's priors; a calibration (Calibration, written by `tandem
// plan calibrate`) replaces them with values fitted to measured traces.
//
// The package is arithmetic on shapes and profiles. It imports model for
// config.json shapes, parallel for the shard plan and the p→d KV map, and
// netshape for the figures of the `--link` profiles, so the numbers it
// uses come from the same place the engine's and `tandem up`'s do; it
// must never import the engine, worker, coordinator or a compute or
// collective backend.
package costmodel
