package main

import "github.com/spf13/cobra"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "tandem",
		Short: "Tandem serves LLMs on clusters of GPUs with disaggregated, tensor-parallel groups",
		Long: `Tandem serves large language models on a cluster: a coordinator hands each
request to a prefill group and then a decode group, each a tensor-parallel
model replica, and records every token's compute, collective and KV-transfer cost.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newUpCmd(),
		newGenerateCmd(),
		newCoordinatorCmd(),
		newWorkerCmd(),
		newTraceCmd(),
		newModelCmd(),
		newTokenizeCmd(),
		newBenchCmd(),
		newPlanCmd(),
		newCertsCmd(),
		newLinkReaperCmd(),
	)
	return root
}
