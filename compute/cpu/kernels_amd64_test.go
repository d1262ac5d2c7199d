package cpu

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestKernelsNoSSEWhileDirty checks the generated kernels for a legacy SSE
// scalar move or operation while a 256- or 512-bit register is live (after
// the first such instruction of a function and before its VZEROUPPER): on
// this project's Xeon one such load between AVX-512 loops made
// layerNormApply 3.6 times slower and a softmax step 4 times (see isa in
// the generator).
func TestKernelsNoSSEWhileDirty(t *testing.T) {
	src, err := os.ReadFile("kernels_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	wide := regexp.MustCompile(`\b[YZ]\d+\b`)
	sse := regexp.MustCompile(`^\s+(MOVSS|MOVSD|ADDSS|SUBSS|MULSS|DIVSS|MAXSS|MINSS|SQRTSS|UCOMISS|COMISS|CVT\w+|MOVAPS|MOVUPS|XORPS|SHUFPS|MOVHLPS|PXOR)\s`)
	fn, dirty := "", false
	for i, line := range strings.Split(string(src), "\n") {
		switch {
		case strings.HasPrefix(line, "TEXT "):
			fn, dirty = strings.Fields(line)[1], false
		case strings.Contains(line, "VZEROUPPER"):
			dirty = false
		case sse.MatchString(line) && dirty:
			t.Errorf("kernels_amd64.s:%d (%s): %q with the upper halves in use", i+1, fn, strings.TrimSpace(line))
		case wide.MatchString(line):
			dirty = true
		}
	}
}
