package compare

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/tandemllm/tandem/netshape/netshapetest"
)

// TestLink compares two disaggregated clusters whose workers each sit
// behind a shaped 25 Gb/s link (tandem up --link, passed through): the
// KV still moves whole, and every namespace and link made is gone once
// the comparison ends.
func TestLink(t *testing.T) {
	c := smallConfig(t)
	netshapetest.Require(t)
	before := netshapetest.State(t)
	c.TPs, c.Modes, c.Link, c.NumPrompts = "1,2", "disaggregated", "eth-25g", 4
	rep, err := Run(t.Context(), c, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Link != "eth-25g" {
		t.Fatalf("report link %q", rep.Link)
	}
	for _, cf := range rep.Configurations {
		if i := slices.Index(cf.UpArgs, "--link"); i < 0 || cf.UpArgs[i+1] != "eth-25g" {
			t.Fatalf("%s: tandem up %v, want --link eth-25g", cf.Name, cf.UpArgs)
		}
	}
	for _, cp := range rep.Points[0].Configs {
		if cp.Cost.Traced != c.NumPrompts || cp.Cost.KVBytes != cp.Cost.AnalyticKV || cp.Cost.KVTransfer <= 0 {
			t.Fatalf("%s: %+v", cp.Name, cp.Cost)
		}
	}
	netshapetest.WaitNoLeftovers(t, before, 30*time.Second)
}
