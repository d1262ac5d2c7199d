// Package dynlibtest helps test library searches (internal/dynlib) over
// fake file trees: Tree makes one, Env stands for the environment, and
// Found, Missed and ErrorHas read what a search found and said.
//
// It is for tests only: no package but a test imports it (those of
// dynlib, compute/cuda and nccl/nvidia). It imports internal/dynlib and
// nothing else of Tandem's.
package dynlibtest
