package engine

// hostArena hands out host memory for the weights the loader copies
// (GPT-2's transposed matrices, column shards), in chunks that the
// platform may back with 2 MiB pages (see hostmem_linux.go): such
// weights then stream from memory with fewer page walks than on 4 KiB
// pages, as the page-cache pages of weights used in place often are
// (docs/benchmarking.md). Memory handed out lives until release.
type hostArena struct {
	chunks [][]byte // every chunk mapped, for release
	free   []byte   // the unused tail of the last chunk
}

// arenaChunk is the size of one arena chunk; a larger request gets a
// chunk of its own size. A multiple of the 2 MiB huge page.
const arenaChunk = 64 << 20

// arenaAlign aligns every block to a cache line.
const arenaAlign = 64

// alloc returns n zeroed bytes, aligned to arenaAlign.
func (a *hostArena) alloc(n int) ([]byte, error) {
	n = (n + arenaAlign - 1) &^ (arenaAlign - 1)
	if len(a.free) < n {
		c, err := mapChunk(max(arenaChunk, (n+hugePage-1)&^(hugePage-1)))
		if err != nil {
			return nil, err
		}
		a.chunks = append(a.chunks, c)
		a.free = c
	}
	out := a.free[:n:n]
	a.free = a.free[n:]
	return out, nil
}

// release unmaps every chunk; nothing alloc returned may be used after.
func (a *hostArena) release() error {
	var first error
	for _, c := range a.chunks {
		if err := unmapChunk(c); err != nil && first == nil {
			first = err
		}
	}
	a.chunks, a.free = nil, nil
	return first
}
