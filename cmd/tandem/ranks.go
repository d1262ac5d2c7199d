package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tandemllm/tandem/worker/supervisor"
)

// rankProbes are a worker rank's /healthz (and /livez) and /readyz.
type rankProbes struct {
	group    string
	rank, tp int
	ready    atomic.Bool
}

func (p *rankProbes) setReady() { p.ready.Store(true) }

// register adds the probes to mux: /healthz (and /livez) answers 200
// while the process serves HTTP; /readyz 200 once the rank has joined its
// group (rank 0: once its whole group has), 503 before.
func (p *rankProbes) register(mux *http.ServeMux) {
	live := func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "alive")
	}
	mux.HandleFunc("/healthz", live)
	mux.HandleFunc("/livez", live)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !p.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "rank %d of group %s (tp %d) has not joined its group yet\n", p.rank, p.group, p.tp)
			return
		}
		fmt.Fprintf(w, "rank %d of group %s (tp %d) is serving\n", p.rank, p.group, p.tp)
	})
}

// ringAdvertised turns a --listen address on all interfaces into one the
// other ranks can dial, since the ring publishes the address it listens
// on: the host of --advertise-addr (this pod's IP) with the listen port.
// Other addresses are returned as they are.
func ringAdvertised(listen, advertise string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("--listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return listen, nil
	}
	if advertise == "" {
		return "", fmt.Errorf("--listen %q listens on all interfaces: give --advertise-addr, whose host the other ranks dial", listen)
	}
	ahost, _, err := net.SplitHostPort(advertise)
	if err != nil {
		return "", fmt.Errorf("--advertise-addr %q: %w", advertise, err)
	}
	return net.JoinHostPort(ahost, port), nil
}

// runLocalRanks runs ranks g.rank … g.rank+localRanks−1 of the group as
// child `tandem worker` processes, each on its own GPU and ports, under a
// supervisor that does not restart them, until ctx ends or one of them
// exits: then it stops the others and returns, so that whatever restarts
// this process (Kubernetes, for a pod) restarts the group's ranks
// together. A process holding every rank of its group also has the
// supervisor clear the group's leftovers in etcd first (the dead ranks'
// registrations and rendezvous entries), and fail the group when a rank's
// registration lapses while it runs.
func runLocalRanks(ctx context.Context, cmd *cobra.Command, f *workerFlags, dir, modelName string) error {
	opts := supervisor.Options{Output: cmd.ErrOrStderr(), CrashLoopLimit: -1}
	if f.localRanks == f.g.tp {
		cli, err := dialEtcd(f.g.etcdEndpoints, f.g.etcdPrefix, f.g.tls)
		if err != nil {
			return err
		}
		defer cli.Close()
		opts.Etcd = cli
	}
	ranks := make([]int, f.localRanks)
	argv := make([][]string, f.localRanks)
	for i := range ranks {
		ranks[i] = f.g.rank + i
		args, err := f.rankArgs(cmd.Flags(), i, dir, modelName)
		if err != nil {
			return err
		}
		argv[i] = args
	}
	// Restarts are off: every rank runs its first incarnation only.
	sup, err := supervisor.Start(ctx, opts, supervisor.Group{Name: f.g.group, Ranks: ranks, Args: func(rank, _ int) []string {
		return argv[rank-f.g.rank]
	}})
	if err != nil {
		return err
	}
	defer sup.Stop()
	select {
	case <-ctx.Done():
		return nil
	case d := <-sup.Down():
		return fmt.Errorf("%w; stopping this process's other ranks so the group restarts as one", d.Err)
	}
}

// rankArgs are the arguments of local rank i: every flag given to this
// process, with the rank, its GPU, its ports and the resolved model set
// for it.
func (f *workerFlags) rankArgs(fl *pflag.FlagSet, i int, dir, modelName string) ([]string, error) {
	set := map[string]string{
		"rank": strconv.Itoa(f.g.rank + i), "local-ranks": "1", "node-rank": "0",
		"gpu": strconv.Itoa(f.be.gpu + i), "threads": strconv.Itoa(f.be.threads),
		"model": dir, "model-name": modelName, "preset": "",
	}
	for name, addr := range map[string]string{"grpc-addr": f.grpcAddr, "advertise-addr": f.advertise, "metrics-addr": f.metricsAddr, "listen": f.g.listen} {
		a, err := offsetPort(addr, i)
		if err != nil {
			return nil, fmt.Errorf("--%s %q: %w", name, addr, err)
		}
		set[name] = a
	}
	args := []string{"worker"}
	fl.Visit(func(fl *pflag.Flag) {
		if _, ok := set[fl.Name]; !ok {
			args = append(args, "--"+fl.Name+"="+fl.Value.String())
		}
	})
	for _, name := range []string{"rank", "local-ranks", "node-rank", "gpu", "threads", "model", "model-name", "preset", "grpc-addr", "advertise-addr", "metrics-addr", "listen"} {
		args = append(args, "--"+name+"="+set[name])
	}
	return args, nil
}

// offsetPort adds i to addr's port; an empty address or port 0 (any free
// port) is left as it is.
func offsetPort(addr string, i int) (string, error) {
	if addr == "" {
		return addr, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 {
		return "", fmt.Errorf("port %q is not a number", port)
	}
	if p == 0 {
		return addr, nil
	}
	if p+i > 65535 {
		return "", fmt.Errorf("port %d + rank %d is past 65535", p, i)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+i)), nil
}
