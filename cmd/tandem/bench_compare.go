package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/bench/compare"
	"github.com/tandemllm/tandem/bench/serve"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/preset"
)

func newBenchCompareCmd() *cobra.Command {
	c := compare.Config{Workload: serve.DefaultWorkload()}
	c.NumPrompts = 100
	var report string
	cmd := &cobra.Command{
		Use:   "compare (--target NAME=HOST:PORT|NAME=URL ... | --tp 2,8 [--modes unified,disaggregated] | --config FILE.yaml ...) [flags]",
		Short: "Run one workload on two or more configurations and compare them, with the per-token cost split",
		Long: `Run the same workload (the flags of tandem bench) on two or more
configurations: running deployments (--target NAME=HOST:PORT, a Tandem
coordinator's gRPC address, or --target NAME=http://HOST:PORT, any
OpenAI-compatible server; repeated) or local clusters this command starts
and stops as tandem up child processes (--tp 2,8 with --modes
unified,disaggregated, or --config FILE.yaml, repeated, with tandem up's
flag names as keys). Each of the --rounds runs every configuration on half
the prompts in order, then on the other half in reverse order (A B B A), so
that drift hits all of them alike; each configuration gets --num-warmups
requests (default: twice the concurrency) before its first block and after
each start of its cluster.

For each configuration and load point it reports the bench summary and, from
every request's server trace, the cost of an output token split into queue,
compute, allreduce, KV transfer, sampling and other, with the allreduce and
KV bytes per token next to their analytic values (a URL target's requests
join the traces of the Tandem coordinator named by --trace-addr NAME=HOST:PORT).
Every difference from the baseline (--baseline NAME, default the first
configuration; --pairwise for every pair) has a 95% confidence interval
that counts both the requests' spread and the rounds' (a t interval over the
rounds' paired differences); one that holds zero reads "not
distinguishable". Timing differences need --rounds 3 or more; use 6 or more
on a shared machine. A P99 difference needs 500 requests a side, or reads
"not enough samples".

Every flag, configuration file and tandem up argument (tandem up --check),
link profile (and the root it needs) and target is checked before any
cluster starts. Ctrl-C or SIGTERM stops the cluster that runs and saves the
report of the blocks that finished, marked "partial".`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := goodputArgs(cmd.Flags(), &c.Goodput, args); err != nil {
				return err
			}
			c.WarmupsGiven = cmd.Flags().Changed("num-warmups")
			if report != "" {
				_, err := compare.Resave(c, report, cmd.ErrOrStderr())
				return err
			}
			_, err := compare.Run(cmd.Context(), c, cmd.OutOrStdout(), cmd.ErrOrStderr())
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&c.Targets, "target", nil, "a running deployment: NAME=HOST:PORT (a Tandem coordinator's gRPC address) or NAME=http://HOST:PORT (an OpenAI-compatible server); repeat for each")
	fl.StringArrayVar(&c.TraceAddrs, "trace-addr", nil, "NAME=HOST:PORT: the gRPC address of the Tandem coordinator behind the URL target NAME, for its cost split; repeat for each")
	fl.StringVar(&c.Endpoint, "endpoint", "", "URL targets: /v1/completions (default) or /v1/chat/completions")
	fl.StringVar(&c.TPs, "tp", "", "local clusters: a comma list of TP degrees")
	fl.StringVar(&c.Modes, "modes", "", "local clusters: unified and/or disaggregated (default unified)")
	fl.StringArrayVar(&c.ConfigFiles, "config", nil, "a local cluster described in YAML (tandem up's flag names as keys); repeat for each")
	fl.StringVar(&c.Preset, "preset", "tiny", "the local clusters' preset model")
	fl.StringVar(&c.ModelDir, "model", "", "the local clusters' model directory (instead of --preset)")
	fl.StringVar(&c.Tokenizer, "tokenizer", "", "the targets' tokenizer, when they do not serve a preset")
	fl.StringVar(&c.Link, "link", "", "local clusters: a link profile each worker's traffic crosses (tandem up --link)")
	fl.StringVar(&c.KVCacheDType, "kv-cache-dtype", "", "local clusters: their KV cache dtype, auto, fp32, bf16 or fp16 (tandem up --kv-cache-dtype); targets: the one they run, for the analytic KV bytes (default: unknown)")
	fl.StringVar(&c.Baseline, "baseline", "", "the configuration the others are compared with (default: the first)")
	fl.BoolVar(&c.Pairwise, "pairwise", false, "compare every pair of configurations instead of each with the baseline")
	fl.IntVar(&c.Rounds, "rounds", 1, "rounds, the configurations interleaved A B B A in each (timing differences need 3 or more)")
	fl.Float64Var(&c.Confidence, "confidence", compare.DefaultConfidence, "family-wise confidence of each configuration pair's differences at a load point, shared over its metrics (Bonferroni)")
	fl.StringVar(&c.APIKey, "api-key", "", "API key sent to every configuration (default: $TANDEM_API_KEY; for URL targets $OPENAI_API_KEY first)")
	fl.StringVar(&c.CACert, "ca-cert", "", "PEM CA certificate of the configurations serving TLS: local clusters given --tls-cert in their args, https URL targets (default for these: the system's roots)")
	workloadFlags(fl, &c.Workload)
	fl.Lookup("num-warmups").Usage = "requests each configuration gets before its first block and after each start of its cluster (default: twice the concurrency, 8 without a limit)"
	fl.StringVar(&c.ResultDir, "result-dir", "", "directory of the report JSON (default: the working directory)")
	fl.StringVar(&c.ResultFilename, "result-filename", "", "the report JSON's name (default: compare-DATE.json)")
	fl.BoolVar(&c.SaveDetailed, "save-detailed", false, "keep the per-request arrays in the report JSON")
	fl.StringVar(&c.Plot, "plot", "", "directory to write the overlaid charts to (PNG and SVG)")
	fl.BoolVar(&c.DisableProgress, "disable-tqdm", false, "no progress")
	fl.BoolVar(&c.Verbose, "verbose", false, "show the local clusters' output")
	fl.StringVar(&report, "report", "", "run nothing: read this saved report (an earlier version's too), save it again in this version's keys (--result-dir, --result-filename; default its name in the working directory) and, with --plot, draw the charts its figures allow (throughput against P99, cost split)")
	return cmd
}

// check is `tandem up --check`, which bench compare runs on each local
// configuration's flags before it starts any cluster: the flags parsed
// (cobra did), the groups, the link (checked by runUp before this), the
// model's config split at every group's TP degree, without creating a
// preset's weights, and the device named.
func (f *upFlags) check(specs []groupSpec) error {
	var cfg *model.Config
	if f.modelDir != "" {
		c, err := model.LoadConfig(filepath.Join(f.modelDir, "config.json"))
		if err != nil {
			return fmt.Errorf("--model %s: %w", f.modelDir, err)
		}
		cfg = c
	} else {
		p, err := preset.Get(f.preset)
		if err != nil {
			return fmt.Errorf("--preset: %w", err)
		}
		if cfg, err = p.Config(); err != nil {
			return fmt.Errorf("--preset %s: %w", f.preset, err)
		}
	}
	for _, g := range specs {
		if _, err := engine.ShardPlan(cfg, engine.Shard{TP: g.tp}); err != nil {
			return fmt.Errorf("%s: TP %d: %w", g.name, g.tp, err)
		}
	}
	switch f.backend.device {
	case "cpu", "cuda", "auto":
	default:
		return fmt.Errorf("--device %q: want cpu, cuda or auto", f.backend.device)
	}
	if f.backend.threads < 0 {
		return fmt.Errorf("--threads %d: must be >= 0", f.backend.threads)
	}
	return nil
}
