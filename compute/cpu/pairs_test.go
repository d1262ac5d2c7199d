package cpu

import (
	"testing"
	"time"
)

// TestProbePairFLOPs: the VDPBF16PS probe runs where the pairs kernels
// do, at a rate of the FMA probe's order (each instruction makes 32
// multiply-adds to an FMA's 16, at one or two a cycle against two);
// elsewhere it reports none.
func TestProbePairFLOPs(t *testing.T) {
	p := NewProbe(1)
	n, d := p.PairFLOPs(5 * time.Millisecond)
	if kernelSets()[0].pairsPeak == nil {
		if n != 0 || d != 0 {
			t.Fatalf("no AVX512_BF16 here, yet the pairs probe counted %g FLOPs in %v", n, d)
		}
		t.Skip("no AVX512_BF16 here")
	}
	fn, fd := p.FLOPs(5 * time.Millisecond)
	rate, fma := n/d.Seconds(), fn/fd.Seconds()
	if n <= 0 || d <= 0 || rate < fma/2 || rate > 4*fma {
		t.Fatalf("pairs %g FLOPs in %v (%.3g FLOP/s), FMAs %g in %v (%.3g)", n, d, rate, fn, fd, fma)
	}
	t.Logf("pairs %.3g FLOP/s, FMAs %.3g: %.2f×", rate, fma, rate/fma)
}
