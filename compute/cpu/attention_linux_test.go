package cpu

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tandemllm/tandem/compute"
)

// TestNewKVCacheFaultsPages checks, with mincore, that every page of a
// new cache's keys and values is resident before anything is written.
func TestNewKVCacheFaultsPages(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *Backend) {
		for _, dt := range []compute.DType{compute.F32, compute.BF16} {
			c, err := b.NewKVCache(compute.KVSpec{Layers: 3, NumBlocks: 100, BlockSize: 16, KVHeads: 4, HeadDim: 64, DType: dt})
			if err != nil {
				t.Fatal(err)
			}
			kc := kvOf(c)
			for _, a := range [][]byte{bytesOf(kc.kb), bytesOf(kc.vb), bytesOf(kc.k), bytesOf(kc.v)} {
				if len(a) == 0 {
					continue
				}
				const page = 4096
				start := uintptr(unsafe.Pointer(&a[0])) &^ (page - 1)
				end := uintptr(unsafe.Pointer(&a[len(a)-1])) + 1
				vec := make([]byte, (end-start+page-1)/page)
				if _, _, errno := unix.Syscall(unix.SYS_MINCORE, start, end-start, uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
					t.Fatal(errno)
				}
				for i, v := range vec {
					if v&1 == 0 {
						t.Fatalf("%v cache: page %d of %d not resident", dt, i, len(vec))
					}
				}
			}
		}
	})
}
