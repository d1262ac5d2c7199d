package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// stoppedAsAsked reports whether err is only the cancellation of ctx, the
// command's signal context: a start cut short by SIGINT or SIGTERM, which
// is the stop the user or a supervisor asked for, not a failure. Commands
// whose interruption says something (bench compare's partial report)
// do not use it.
func stoppedAsAsked(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, context.Canceled)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tandem:", err)
		os.Exit(1)
	}
}
