// Package netshapetest holds the test helper of netshape: tests that
// build networks call Require first.
package netshapetest

import (
	"os"
	"testing"

	"github.com/tandemllm/tandem/netshape"
)

// RequireEnv, when set, turns a missing root or iproute2 into a test
// failure instead of a skip (CI sets it, in .ci/run).
const RequireEnv = "TANDEM_REQUIRE_NETSHAPE"

// Require skips t when this process cannot build networks (not root, no
// iproute2), saying why, unless RequireEnv is set, when it fails t.
func Require(t testing.TB) {
	t.Helper()
	err := netshape.Check()
	if err == nil {
		return
	}
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("%v (%s is set)", err, RequireEnv)
	}
	t.Skipf("%v; set %s=1 to make this a failure", err, RequireEnv)
}
