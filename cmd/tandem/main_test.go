package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"testing"
)

// TestMain lets the test binary act as the tandem binary when it is
// re-executed as a worker process (tandem up and tandem generate --local
// --tp N start their workers with os.Executable()), as the reaper of a
// --link network, or as `tandem up` itself (tandem bench compare starts
// it with os.Executable(); a test kills it).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && slices.Contains([]string{"worker", "link-reaper", "up"}, os.Args[1]) {
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
