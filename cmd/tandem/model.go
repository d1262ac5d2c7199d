package main

import "github.com/spf13/cobra"

// Placeholder until the model command lands.
func newModelCmd() *cobra.Command { return &cobra.Command{Use: "model", Hidden: true} }
