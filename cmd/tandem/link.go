package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/netshape"
	"github.com/tandemllm/tandem/worker/supervisor"
)

// linkHelp is the help of --link on the commands that take it.
var linkHelp = "put each worker process in its own network namespace, linked to the others through a bridge shaped with tc to this profile: " +
	strings.Join(netshape.Names(), ", ") + " (needs root and iproute2; see docs/benchmarking.md)"

// checkLink validates --link before anything is loaded: a known profile,
// and a process that can build networks.
func checkLink(name string) (netshape.Profile, error) {
	p, err := netshape.Lookup(name)
	if err != nil {
		return p, fmt.Errorf("--link: %w", err)
	}
	if err := netshape.Check(); err != nil {
		return p, fmt.Errorf("--link %s: %w", name, err)
	}
	return p, nil
}

// startLink builds the --link network of nodes namespaces, with a
// `tandem link-reaper` child that removes it if this process is killed,
// and says what it built.
func startLink(ctx context.Context, p netshape.Profile, nodes int, w io.Writer) (*netshape.Network, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "building the %s link ...\n", p.Name)
	nw, err := netshape.New(ctx, netshape.Options{Nodes: nodes, Profile: p, Reaper: []string{self, "link-reaper"}, ReaperStderr: os.Stderr})
	if err != nil {
		return nil, fmt.Errorf("--link %s: %w", p.Name, err)
	}
	for _, line := range nw.Describe() {
		fmt.Fprintln(w, line)
	}
	return nw, nil
}

// inLink makes the supervisor run each rank r of g in node first+r of
// nw, listening on the node's address (ring, gRPC, metrics): the binary
// becomes the namespace wrapper (`ip netns exec NS`), which execs tandem
// in place, so the rank keeps the supervisor's parent-death signal and
// process group.
func inLink(nw *netshape.Network, opts *supervisor.Options, g *supervisor.Group, first int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	opts.Binary = nw.Command(0)[0]
	args := g.Args
	g.Args = func(rank, inc int) []string {
		i := first + rank
		a := nw.Node(i).Addr + ":0"
		tandem := append([]string{self}, args(rank, inc)...)
		return nw.Command(i, append(tandem, "--listen", a, "--grpc-addr", a, "--metrics-addr", a)...)[1:]
	}
	return nil
}

// warnLoopback says when the workers, each in its namespace, cannot reach
// the OTLP collector: a loopback address is their own namespace's.
func warnLoopback(w io.Writer, bridge, otlp string) {
	host, _, err := net.SplitHostPort(otlp)
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		fmt.Fprintf(w, "warning: --otlp-endpoint %s is a loopback address, which the workers in their namespaces do not reach: "+
			"have the collector listen on %s (the bridge) to get their spans\n", otlp, bridge)
	}
}

func newLinkReaperCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "link-reaper PREFIX",
		Short:  "Remove a --link network once the process that built it is gone (started by tandem up)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Ctrl-C and SIGTERM are for the owner; this process acts when
			// the owner's end of its stdin closes, however the owner ends.
			signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			return netshape.Reap(context.Background(), cmd.InOrStdin(), args[0])
		},
	}
}
