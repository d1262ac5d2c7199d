//go:build !linux

package engine

// hugePage rounds chunk sizes; without Linux's transparent huge pages
// chunks come from the Go heap.
const hugePage = 2 << 20

func mapChunk(n int) ([]byte, error) { return make([]byte, n), nil }

func unmapChunk([]byte) error { return nil }

func dropPages([]byte) {}
