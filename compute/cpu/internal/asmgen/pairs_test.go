package main

import (
	"bytes"
	"testing"
)

// TestVDPBF16PSBytes holds the encoding to GNU as's (objdump of
// "vdpbf16ps %zmmB, %zmmA, %zmmDST"), over registers below and above 8
// and 16 in every operand.
func TestVDPBF16PSBytes(t *testing.T) {
	for _, c := range []struct {
		dst, a, b int
		want      []byte
	}{
		{1, 2, 3, []byte{0x62, 0xf2, 0x6e, 0x48, 0x52, 0xcb}},
		{5, 24, 27, []byte{0x62, 0x92, 0x3e, 0x40, 0x52, 0xeb}},
		{23, 26, 27, []byte{0x62, 0x82, 0x2e, 0x40, 0x52, 0xfb}},
		{0, 24, 26, []byte{0x62, 0x92, 0x3e, 0x40, 0x52, 0xc2}},
		{9, 12, 13, []byte{0x62, 0x52, 0x1e, 0x48, 0x52, 0xcd}},
	} {
		if got := vdpbf16psBytes(c.dst, c.a, c.b); !bytes.Equal(got, c.want) {
			t.Errorf("VDPBF16PS Z%d, Z%d, Z%d = % x, want % x", c.b, c.a, c.dst, got, c.want)
		}
	}
}
