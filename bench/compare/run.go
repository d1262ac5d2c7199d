package compare

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/tandemllm/tandem/apikey"
	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/dataset"
	"github.com/tandemllm/tandem/bench/local"
	"github.com/tandemllm/tandem/bench/serve"
	"github.com/tandemllm/tandem/bench/target/tandem"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// Sample is one configuration's run of one load point in one round.
type Sample struct {
	Run    *bench.Run
	Result *bench.Result
	// Costs holds the cost of each completed request whose trace was
	// found; Missing counts the others.
	Costs   []Cost
	Missing int
}

// Side is one configuration and what it measured.
type Side struct {
	Configuration
	// Model is the model's shape and tokenizer, for analytic values.
	Model *serve.Model
	// Samples[point][round].
	Samples [][]*Sample
}

// Run is `tandem bench compare`: it checks every flag, every
// configuration (targets reached, local topologies split the model) and
// builds the workload before any load, then runs the rounds, starting
// and stopping each local cluster in its turn, and reports.
func Run(ctx context.Context, c Config, stdout, stderr io.Writer) (*Report, error) {
	plan, err := c.Plan()
	if err != nil {
		return nil, err
	}
	if c.Rounds == 0 {
		c.Rounds = 1
	}
	if c.Rounds < 1 {
		return nil, usage("--rounds %d: must be >= 1", c.Rounds)
	}
	cfgs, err := c.Configurations()
	if err != nil {
		return nil, err
	}
	sides, closeTargets, err := c.prepare(ctx, cfgs)
	defer closeTargets()
	if err != nil {
		return nil, err
	}
	reqs, err := plan.Requests(sides[0].Model.Tokenizer)
	if err != nil {
		return nil, err
	}
	plan.Settings.Backend, plan.Settings.TokenizerID = "tandem", sides[0].Model.ID
	var progress io.Writer
	if !c.DisableProgress {
		progress = stderr
	}
	id := serve.RunID()
	for round := range c.Rounds {
		// Each round starts one configuration later, so no configuration
		// always runs first (or last) in a round.
		for k := range sides {
			s := sides[(round+k)%len(sides)]
			if progress != nil {
				fmt.Fprintf(progress, "round %d/%d: %s\n", round+1, c.Rounds, s.Name)
			}
			if err := c.runSide(ctx, s, plan, reqs, fmt.Sprintf("%s-%s-r%d", id, s.Name, round), progress); err != nil {
				return nil, fmt.Errorf("%s, round %d: %w", s.Name, round+1, err)
			}
		}
	}
	rep := NewReport(c, plan, sides)
	rep.WriteTable(stdout)
	if err := c.save(rep, stderr); err != nil {
		return rep, err
	}
	return rep, nil
}

// prepare resolves each configuration's model and reaches every target;
// the returned function closes the targets.
func (c *Config) prepare(ctx context.Context, cfgs []Configuration) ([]*Side, func(), error) {
	var targets []*tandem.Target
	closeAll := func() {
		for _, t := range targets {
			t.Close()
		}
	}
	var sides []*Side
	for _, cf := range cfgs {
		s := &Side{Configuration: cf}
		if cf.Addr != "" {
			t, err := tandem.New(cf.Addr, "", c.dialOptions()...)
			if err != nil {
				return nil, closeAll, usage("--target %s: %v", cf.Name, err)
			}
			targets = append(targets, t)
			served, err := t.Model(ctx)
			if err != nil {
				return nil, closeAll, fmt.Errorf("--target %s: target unreachable: %w", cf.Name, err)
			}
			if s.Model, err = serve.ResolveModel(c.Tokenizer, served); err != nil {
				return nil, closeAll, err
			}
		} else {
			m, err := serve.ResolveModel(cf.Model, "")
			if err != nil {
				return nil, closeAll, fmt.Errorf("configuration %s: %w", cf.Name, err)
			}
			s.Model = m
			if err := checkTopology([]Configuration{cf}, m.Config); err != nil {
				return nil, closeAll, err
			}
		}
		sides = append(sides, s)
	}
	if c.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, closeAll, err
		}
		c.Executable = exe
	}
	for _, s := range sides {
		if s.Addr == "" {
			if _, err := os.Stat(c.Executable); err != nil {
				return nil, closeAll, fmt.Errorf("the tandem binary for local clusters: %w", err)
			}
			break
		}
	}
	return sides, closeAll, nil
}

// dialOptions send the API key, if any, with every call.
func (c *Config) dialOptions() []grpc.DialOption {
	key := c.APIKey
	if key == "" {
		key = os.Getenv("TANDEM_API_KEY")
	}
	if key == "" {
		return nil
	}
	return []grpc.DialOption{grpc.WithPerRPCCredentials(apikey.PerRPC(key))}
}

// runSide runs every load point on one configuration for one round,
// starting its local cluster first and stopping it on every way out.
func (c *Config) runSide(ctx context.Context, s *Side, plan *serve.Plan, reqs []dataset.Request, prefix string, progress io.Writer) error {
	addr := s.Addr
	if addr == "" {
		var logs io.Writer
		if c.Verbose {
			logs = progress
		}
		cl, err := local.Start(ctx, local.Options{Executable: c.Executable, Args: s.UpArgs, Log: logs})
		if err != nil {
			return err
		}
		defer cl.Stop()
		addr = cl.GRPC
	}
	t, err := tandem.New(addr, "", c.dialOptions()...)
	if err != nil {
		return err
	}
	defer t.Close()
	served, err := t.Model(ctx)
	if err != nil {
		return err
	}
	settings := plan.Settings
	settings.ModelID, settings.Label = served, s.Name
	if len(s.Samples) == 0 {
		s.Samples = make([][]*Sample, len(plan.Points))
	}
	for i, pt := range plan.Points {
		run, err := bench.Execute(ctx, t, plan.Options(reqs, pt, fmt.Sprintf("%s-p%d-", prefix, i), progress))
		if err != nil {
			return err
		}
		smp := &Sample{Run: run, Result: bench.Summarize(run, settings)}
		smp.Costs, smp.Missing = costs(ctx, tandemv1.NewTracesClient(t.Conn()), run, s.Model)
		s.Samples[i] = append(s.Samples[i], smp)
	}
	return nil
}

// costs fetches the trace of every completed request of run (four at a
// time) and computes its cost; it returns the costs in workload order
// and the number of traces not found.
func costs(ctx context.Context, traces tandemv1.TracesClient, run *bench.Run, m *serve.Model) ([]Cost, int) {
	out := make([]*Cost, len(run.Outputs))
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		missing int
	)
	work := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				resp, err := traces.GetTrace(cctx, &tandemv1.GetTraceRequest{RequestId: run.Outputs[i].RequestID})
				cancel()
				if err != nil { // evicted, or the coordinator is gone: counted
					mu.Lock()
					missing++
					mu.Unlock()
					continue
				}
				c := RequestCost(resp.GetTrace(), m.Config)
				out[i] = &c
			}
		}()
	}
	for i, o := range run.Outputs {
		if o.Success {
			select {
			case work <- i:
			case <-ctx.Done():
			}
		}
	}
	close(work)
	wg.Wait()
	var cs []Cost
	for _, c := range out {
		if c != nil {
			cs = append(cs, *c)
		}
	}
	return cs, missing
}
