package main

import "github.com/spf13/cobra"

// Placeholder until the generate command lands.
func newGenerateCmd() *cobra.Command { return &cobra.Command{Use: "generate", Hidden: true} }
