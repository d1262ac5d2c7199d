package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
)

// TestMain lets the test binary act as the tandem binary when it is
// re-executed with a subcommand: as a worker process (tandem up and
// tandem generate --local --tp N start their workers with
// os.Executable()), as a cluster (tandem bench compare starts tandem up
// with os.Executable()), or as `tandem up` or `generate` run by a test
// that kills it. A test binary's own arguments all start with "-".
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		cmd := newRootCmd()
		cmd.SetArgs(os.Args[1:])
		if err := cmd.ExecuteContext(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "tandem:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
