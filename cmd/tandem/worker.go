package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/metrics"
	"github.com/tandemllm/tandem/nccl"
	"github.com/tandemllm/tandem/nccl/ring"
	"github.com/tandemllm/tandem/telemetry"
	"github.com/tandemllm/tandem/worker"
)

// groupFlags place a process in a tensor-parallel group.
type groupFlags struct {
	tp, rank      int
	group         string
	etcdEndpoints string
	listen        string
	joinTimeout   time.Duration
}

// validate checks the flags; a process that joins a group itself
// (joins) also needs the group's name and etcd.
func (g *groupFlags) validate(joins bool) error {
	switch {
	case g.tp < 1:
		return fmt.Errorf("--tp %d: must be >= 1", g.tp)
	case g.rank < 0 || g.rank >= g.tp:
		return fmt.Errorf("--rank %d: must be in 0..%d for --tp %d", g.rank, g.tp-1, g.tp)
	case joins && g.tp > 1 && g.group == "":
		return errors.New("--group is required with --tp > 1")
	case joins && g.tp > 1 && g.etcdEndpoints == "":
		return errors.New("--etcd-endpoints is required with --tp > 1")
	}
	return nil
}

func newWorkerCmd() *cobra.Command {
	var (
		g           groupFlags
		role        string
		model       servedModel
		grpcAddr    string
		advertise   string
		metricsAddr string
		otlp        string
		eng         engineFlags
		be          backendFlags
	)
	cmd := &cobra.Command{
		Use:   "worker --role ROLE --tp N --rank R --group G --etcd-endpoints URLS (--model DIR | --preset NAME)",
		Short: "Run one rank of a worker group (prefill, decode or unified)",
		Long: `Run one rank of a worker group. The ranks of group G find each other through
etcd (each publishes the address of its collective endpoint and waits for the
others, up to --join-timeout), connect a TCP ring and load only their own
slices of the weights. Each rank then serves gRPC on --grpc-addr and registers
itself in etcd under a lease (role, group, rank, address, KV capacity), so the
coordinator can route to the group once all its ranks are there.

Rank 0 leads: it serves the Worker API to the coordinator and runs the
continuous-batching scheduler; the other ranks follow its step plans.
--role prefill computes prompts and sends their KV cache to decode groups;
--role decode continues them; --role unified does both (colocated serving).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.validate(true); err != nil {
				return err
			}
			switch role {
			case cluster.RolePrefill, cluster.RoleDecode, cluster.RoleUnified:
			default:
				return fmt.Errorf("--role %q: must be prefill, decode or unified", role)
			}
			if g.etcdEndpoints == "" {
				return errors.New("--etcd-endpoints is required: workers register in etcd")
			}
			ctx := cmd.Context()
			dir, modelName, err := model.resolve(ctx)
			if err != nil {
				return err
			}
			cli, err := dialEtcd(g.etcdEndpoints)
			if err != nil {
				return err
			}
			defer cli.Close()
			m, comm, closeAll, err := openShard(ctx, dir, &g, &be)
			if err != nil {
				return err
			}
			defer closeAll()
			ln, err := net.Listen("tcp", grpcAddr)
			if err != nil {
				return fmt.Errorf("--grpc-addr %q: %w", grpcAddr, err)
			}
			node, _ := os.Hostname()
			tel, err := telemetry.Setup(ctx, telemetry.Options{
				Endpoint: otlp, ServiceName: "tandem-worker",
				Attributes: []attribute.KeyValue{telemetry.Group(g.group), telemetry.Rank(g.rank), telemetry.Role(role), attribute.String("host.name", node)},
			})
			if err != nil {
				ln.Close()
				return fmt.Errorf("--otlp-endpoint %q: %w", otlp, err)
			}
			defer tel.Shutdown(context.WithoutCancel(ctx))
			reg := metrics.NewRegistry()
			stopMetrics, err := serveMetrics(metricsAddr, reg, cmd.ErrOrStderr())
			if err != nil {
				ln.Close()
				return err
			}
			defer stopMetrics()
			opts := eng.options()
			opts.Comm = comm
			wopts := worker.Options{
				Role: role, Group: g.group, ModelName: modelName, Model: m, Engine: opts,
				Listener: ln, AdvertiseAddr: advertise, Etcd: cli, Registerer: reg, Telemetry: tel,
			}
			if gpu, err := metrics.OpenGPU(0); err == nil { // absent without an NVIDIA driver
				defer gpu.Close()
				wopts.GPU = gpu
			}
			return worker.Run(ctx, wopts)
		},
	}
	fl := cmd.Flags()
	g.register(cmd)
	fl.StringVar(&role, "role", "", "what the group does: prefill, decode or unified")
	model.register(fl, "model directory")
	fl.StringVar(&grpcAddr, "grpc-addr", "127.0.0.1:0", "listen address of this rank's gRPC server")
	fl.StringVar(&advertise, "advertise-addr", "", "address other processes dial to reach --grpc-addr (default: the address listened on)")
	fl.StringVar(&metricsAddr, "metrics-addr", "127.0.0.1:0", "listen address of this rank's Prometheus /metrics (empty: none)")
	fl.StringVar(&otlp, "otlp-endpoint", "", "OTLP/gRPC collector (host:port) to export OpenTelemetry spans to; empty: no export")
	eng.register(cmd)
	be.register(fl)
	return cmd
}

// serveMetrics serves reg's /metrics on addr until stop; it says where.
func serveMetrics(addr string, reg *prometheus.Registry, w io.Writer) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %q: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Fprintf(w, "metrics at http://%s/metrics\n", ln.Addr())
	return func() { srv.Close() }, nil
}

// servedModel are the flags choosing the model a cluster process serves.
type servedModel struct{ dir, preset, name string }

func (m *servedModel) register(fl *pflag.FlagSet, dirHelp string) {
	fl.StringVar(&m.dir, "model", "", dirHelp)
	fl.StringVar(&m.preset, "preset", "", "preset model (created in the cache directory on first use)")
	fl.StringVar(&m.name, "model-name", "", "model id served (default: the preset name or the model directory's base name)")
}

// resolve returns the model directory and the id it is served under.
func (m *servedModel) resolve(ctx context.Context) (dir, name string, err error) {
	dir, err = resolveModelDir(ctx, m.dir, m.preset)
	if err != nil {
		return "", "", err
	}
	if name = m.name; name == "" {
		name = defaultModelName(dir, m.preset)
	}
	return dir, name, nil
}

// defaultModelName is the model id a cluster serves a directory under.
func defaultModelName(dir, preset string) string {
	if preset != "" {
		return preset
	}
	return filepath.Base(filepath.Clean(dir))
}

func dialEtcd(endpoints string) (*clientv3.Client, error) {
	cli, err := cluster.Dial(strings.Split(endpoints, ","))
	if err != nil {
		return nil, fmt.Errorf("--etcd-endpoints %q: %w", endpoints, err)
	}
	return cli, nil
}

func (g *groupFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.IntVar(&g.tp, "tp", 1, "tensor-parallel degree of the group")
	fl.IntVar(&g.rank, "rank", 0, "this process's rank in the group")
	fl.StringVar(&g.group, "group", "", "group name, shared by all its ranks")
	fl.StringVar(&g.etcdEndpoints, "etcd-endpoints", "", "comma-separated etcd client URLs")
	fl.StringVar(&g.listen, "listen", "127.0.0.1:0", "address of this rank's collective endpoint")
	fl.DurationVar(&g.joinTimeout, "join-timeout", time.Minute, "how long to wait for the group's other ranks")
}

// engineFlags are the engine options exposed on the command line.
type engineFlags struct {
	maxBatchTokens int
	kvCacheMB      int
}

func (f *engineFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.IntVar(&f.maxBatchTokens, "max-batch-tokens", 512, "rows per step, also the prefill chunk size")
	fl.IntVar(&f.kvCacheMB, "kv-cache-mb", 512, "KV cache memory budget in MiB")
}

func (f *engineFlags) options() engine.Options {
	return engine.Options{MaxBatchTokens: f.maxBatchTokens, KVCacheBytes: int64(f.kvCacheMB) << 20}
}

// joinGroup connects this rank to its group's ring through an etcd
// rendezvous.
func joinGroup(ctx context.Context, g *groupFlags) (nccl.Communicator, error) {
	cli, err := dialEtcd(g.etcdEndpoints)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ln, err := ring.Listen(g.listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", g.listen, err)
	}
	jctx, cancel := context.WithTimeout(ctx, g.joinTimeout)
	defer cancel()
	addrs, err := cluster.Rendezvous(jctx, cli, cluster.Member{Group: g.group, Size: g.tp, Rank: g.rank, Value: ln.Addr()})
	if err != nil {
		ln.Close()
		return nil, err
	}
	return ring.Connect(jctx, ln, g.rank, addrs, ring.Options{})
}

// openShard joins the group (when TP > 1) and loads this rank's shard of
// the model; closeAll releases everything in reverse order.
func openShard(ctx context.Context, dir string, g *groupFlags, bf *backendFlags) (*engine.Model, nccl.Communicator, func(), error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	fail := func(err error) (*engine.Model, nccl.Communicator, func(), error) {
		closeAll()
		return nil, nil, nil, err
	}
	var comm nccl.Communicator
	if g.tp > 1 {
		c, err := joinGroup(ctx, g)
		if err != nil {
			return fail(err)
		}
		closers = append(closers, func() { c.Close() })
		comm = c
	}
	be, err := bf.open()
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { be.Close() })
	m, err := engine.Open(dir, be, engine.Shard{TP: g.tp, Rank: g.rank})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { m.Close() })
	return m, comm, closeAll, nil
}
