// Package nccl declares the collectives the ranks of a tensor-parallel
// group use to combine partial results: the Communicator interface
// (AllReduce, AllGather, Broadcast, Send/Recv, Barrier), the buffers it
// moves (host or device memory, fp32 or bf16) and the per-call records
// the flight recorder keeps.
//
// Implementations live in sub-packages: nccl/ring (TCP between processes,
// no GPU needed) and nccl/nvidia (NVIDIA's NCCL, loaded at run time). This
// package imports nothing of Tandem's; the engine, worker and coordinator
// use it, never the other way round.
package nccl
