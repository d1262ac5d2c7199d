package main

import "github.com/spf13/cobra"

// Placeholder until the tokenize command lands.
func newTokenizeCmd() *cobra.Command { return &cobra.Command{Use: "tokenize", Hidden: true} }
