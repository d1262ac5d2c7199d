package main

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// TestMain lets the test binary act as the tandem binary when it is
// re-executed as a worker process (tandem generate --local --tp N starts
// its other ranks with os.Executable()).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		cmd := newRootCmd()
		cmd.SetArgs(os.Args[1:])
		if err := cmd.ExecuteContext(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "tandem:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
