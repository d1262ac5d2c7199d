package main

import (
	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/bench/compare"
	"github.com/tandemllm/tandem/bench/serve"
)

func newBenchCompareCmd() *cobra.Command {
	c := compare.Config{Workload: serve.DefaultWorkload()}
	c.NumPrompts = 100
	cmd := &cobra.Command{
		Use:   "compare (--target NAME=HOST:PORT ... | --tp 2,8 [--modes unified,disaggregated] | --config FILE.yaml ...) [flags]",
		Short: "Run one workload on two or more configurations and compare them, with the per-token cost split",
		Long: `Run the same workload (the flags of tandem bench) on two or more
configurations: running deployments (--target NAME=HOST:PORT, a coordinator's
gRPC address, repeated) or local clusters this command starts and stops as
tandem up child processes (--tp 2,8 with --modes unified,disaggregated, or
--config FILE.yaml, repeated, with tandem up's flag names as keys). Rounds
(--rounds N) interleave the configurations so that drift hits all of them.

For each configuration and load point it reports the bench summary and, from
every request's server trace, the cost of an output token split into queue,
compute, allreduce, KV transfer, sampling and other, with the allreduce and
KV bytes per token next to their analytic values. Every difference from the
first configuration has a bootstrap confidence interval over rounds and
requests; one that holds zero reads "not distinguishable".`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := goodputArgs(cmd.Flags(), &c.Goodput, args); err != nil {
				return err
			}
			_, err := compare.Run(cmd.Context(), c, cmd.OutOrStdout(), cmd.ErrOrStderr())
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&c.Targets, "target", nil, "a running deployment, NAME=HOST:PORT (its coordinator's gRPC address); repeat for each")
	fl.StringVar(&c.TPs, "tp", "", "local clusters: a comma list of TP degrees")
	fl.StringVar(&c.Modes, "modes", "", "local clusters: unified and/or disaggregated (default unified)")
	fl.StringArrayVar(&c.ConfigFiles, "config", nil, "a local cluster described in YAML (tandem up's flag names as keys); repeat for each")
	fl.StringVar(&c.Preset, "preset", "tiny", "the local clusters' preset model")
	fl.StringVar(&c.ModelDir, "model", "", "the local clusters' model directory (instead of --preset)")
	fl.StringVar(&c.Tokenizer, "tokenizer", "", "the targets' tokenizer, when they do not serve a preset")
	fl.StringVar(&c.Link, "link", "", "local clusters: a link profile each worker's traffic crosses (tandem up --link)")
	fl.IntVar(&c.Rounds, "rounds", 1, "rounds, the configurations interleaved in each")
	fl.StringVar(&c.APIKey, "api-key", "", "API key sent to every configuration (default: $TANDEM_API_KEY)")
	workloadFlags(fl, &c.Workload)
	fl.StringVar(&c.ResultDir, "result-dir", "", "directory of the report JSON (default: the working directory)")
	fl.StringVar(&c.ResultFilename, "result-filename", "", "the report JSON's name (default: compare-DATE.json)")
	fl.BoolVar(&c.SaveDetailed, "save-detailed", false, "keep the per-request arrays in the report JSON")
	fl.StringVar(&c.Plot, "plot", "", "directory to write the overlaid charts to (PNG and SVG)")
	fl.BoolVar(&c.DisableProgress, "disable-tqdm", false, "no progress")
	fl.BoolVar(&c.Verbose, "verbose", false, "show the local clusters' output")
	return cmd
}
