package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/tracing"
)

func newTraceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trace",
		Short: "Show or export a request's cross-node trace",
		Long: `Fetch a recent request's trace from a coordinator: every step of every rank
that served it (compute, collectives, KV transfer, queueing), in the
coordinator's clock with each rank's clock error bound.`,
	}
	cmd.AddCommand(newTraceShowCmd(), newTraceExportCmd())
	return cmd
}

// fetchTrace asks the coordinator at c's address for one request's trace.
func fetchTrace(ctx context.Context, c *clientFlags, id string) (*tandemv1.RequestTrace, error) {
	addr := c.addr
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := tandemv1.NewTracesClient(conn).GetTrace(ctx, &tandemv1.GetTraceRequest{RequestId: id})
	if err != nil {
		return nil, remoteError(addr, err)
	}
	return resp.GetTrace(), nil
}

func newTraceShowCmd() *cobra.Command {
	var (
		addr  clientFlags
		width int
	)
	cmd := &cobra.Command{
		Use:   "show REQUEST_ID",
		Short: "Print a request's per-token cost table, summary and timeline",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if width < 20 {
				return fmt.Errorf("--width %d: must be >= 20", width)
			}
			t, err := fetchTrace(cmd.Context(), &addr, args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if err := tracing.WriteTable(out, t); err != nil {
				return err
			}
			fmt.Fprintln(out)
			if err := tracing.WriteTimeline(out, t, width); err != nil {
				return err
			}
			for _, m := range t.GetMissingRanks() {
				fmt.Fprintf(cmd.ErrOrStderr(), "missing: %s\n", m)
			}
			return nil
		},
	}
	addr.register(cmd.Flags(), "127.0.0.1:9090")
	cmd.Flags().IntVar(&width, "width", 100, "timeline width in characters")
	return cmd
}

func newTraceExportCmd() *cobra.Command {
	var (
		addr        clientFlags
		format, out string
	)
	cmd := &cobra.Command{
		Use:   "export REQUEST_ID -o FILE",
		Short: "Write a request's trace as Chrome trace event JSON (opens in ui.perfetto.dev)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "perfetto" {
				return fmt.Errorf("--format %q: only perfetto is supported", format)
			}
			if out == "" {
				return errors.New("-o FILE is required (- for stdout)")
			}
			t, err := fetchTrace(cmd.Context(), &addr, args[0])
			if err != nil {
				return err
			}
			if out == "-" {
				return tracing.WritePerfetto(cmd.OutOrStdout(), t)
			}
			f, err := os.Create(out)
			if err != nil {
				return fmt.Errorf("-o %q: %w", out, err)
			}
			if err := tracing.WritePerfetto(f, t); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("-o %q: %w", out, err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (open it at ui.perfetto.dev)\n", out)
			return nil
		},
	}
	addr.register(cmd.Flags(), "127.0.0.1:9090")
	cmd.Flags().StringVar(&format, "format", "perfetto", "output format: perfetto (Chrome trace event JSON)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "output file (- for stdout)")
	return cmd
}
