package main

import "github.com/spf13/cobra"

func newBenchCompareCmd() *cobra.Command {
	return &cobra.Command{Use: "compare", Hidden: true}
}
