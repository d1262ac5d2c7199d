package serve

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/tandemllm/tandem/bench/local/localtest"
)

// TestMain removes the built binary and fails the package's tests when
// they leave goroutines behind (a load generator's senders, a target's
// connections).
func TestMain(m *testing.M) {
	code := m.Run()
	localtest.Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}
