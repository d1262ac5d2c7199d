package engine

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the transparent huge page size of x86-64 and most arm64.
const hugePage = 2 << 20

// mapChunk maps n bytes (a multiple of hugePage) of anonymous memory,
// aligned to hugePage and advised to transparent huge pages. Where the
// kernel gives none (THP "never", or no THP) the advice fails and the
// chunk stays on small pages, which is still correct.
func mapChunk(n int) ([]byte, error) {
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(n+hugePage), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("engine: mapping %d bytes for weights: %w", n, err)
	}
	// Map a huge page more than asked, then unmap the unaligned ends.
	head := (hugePage - int(uintptr(p)%hugePage)) % hugePage
	if head > 0 {
		_ = unix.MunmapPtr(p, uintptr(head))
	}
	if tail := hugePage - head; tail > 0 {
		_ = unix.MunmapPtr(unsafe.Add(p, head+n), uintptr(tail))
	}
	c := unsafe.Slice((*byte)(unsafe.Add(p, head)), n)
	_ = unix.Madvise(c, unix.MADV_HUGEPAGE)
	return c, nil
}

// dropPages takes the whole pages of a read-only file mapping's b out of
// the process's page tables; the page cache keeps them, and a later read
// faults them back in.
func dropPages(b []byte) {
	const page = 4096
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	from := int((page - p%page) % page)
	to := from + (len(b)-from)/page*page
	if to > from {
		_ = unix.Madvise(b[from:to], unix.MADV_DONTNEED)
	}
}

// unmapChunk unmaps a chunk of mapChunk.
func unmapChunk(c []byte) error {
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(c)), uintptr(len(c)))
}
