package compare

import (
	"os"
	"testing"

	"github.com/tandemllm/tandem/bench/local/localtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	localtest.Cleanup()
	os.Exit(code)
}
