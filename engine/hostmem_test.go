package engine

import (
	"runtime"
	"testing"
	"unsafe"
)

// TestHostArena checks that blocks are cache-line aligned, zeroed, do
// not overlap, that a block larger than a chunk gets its own, that chunks
// start on a huge page, and that release unmaps every chunk.
func TestHostArena(t *testing.T) {
	var a hostArena
	sizes := []int{1, 100, 768 * 768 * 2, arenaChunk + 3, 64, arenaChunk - 100}
	var blocks [][]byte
	for _, n := range sizes {
		b, err := a.alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < n {
			t.Fatalf("alloc(%d) gave %d bytes", n, len(b))
		}
		if p := uintptr(unsafe.Pointer(&b[0])); p%arenaAlign != 0 {
			t.Fatalf("alloc(%d) at %#x, not %d-byte aligned", n, p, arenaAlign)
		}
		for i, v := range b {
			if v != 0 {
				t.Fatalf("alloc(%d)[%d] = %d, want zeroed memory", n, i, v)
			}
		}
		for i := range b {
			b[i] = byte(len(blocks) + 1)
		}
		blocks = append(blocks, b)
	}
	for i, b := range blocks {
		if b[0] != byte(i+1) || b[len(b)-1] != byte(i+1) {
			t.Fatalf("block %d was overwritten by another", i)
		}
	}
	if len(a.chunks) != 3 {
		t.Errorf("%d chunks for blocks of %v, want 3", len(a.chunks), sizes)
	}
	for i, c := range a.chunks {
		if runtime.GOOS != "linux" {
			break // chunks come from the Go heap
		}
		if p := uintptr(unsafe.Pointer(&c[0])); p%hugePage != 0 {
			t.Errorf("chunk %d at %#x, not on a %d-byte page", i, p, hugePage)
		}
	}
	if err := a.release(); err != nil {
		t.Fatal(err)
	}
	if a.chunks != nil || a.free != nil {
		t.Error("release left chunks")
	}
}
