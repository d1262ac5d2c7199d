package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/model/safetensors"
)

func newModelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Make and inspect model directories",
		Long: `Model directories are Hugging Face's: config.json, tokenizer.json and
safetensors weights. "tandem model init" writes one with seeded random
weights from a built-in preset, so nothing needs downloading.`,
	}
	cmd.AddCommand(newModelPresetsCmd(), newModelInitCmd(), newModelInspectCmd())
	return cmd
}

func newModelPresetsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "presets",
		Short: "List the built-in model presets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tARCH\tPARAMS\tDTYPE\tSIZE\tDESCRIPTION")
			for _, p := range preset.All() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Arch, humanCount(p.Params()),
					strings.ToLower(string(p.DefaultDType)), humanBytes(p.DataSize("")), p.Description)
			}
			return tw.Flush()
		},
	}
}

func newModelInitCmd() *cobra.Command {
	var (
		name, out, dtype   string
		seed               uint64
		shardMB            int64
		existOK, noWeights bool
	)
	cmd := &cobra.Command{
		Use:   "init --preset NAME --out DIR",
		Short: "Write a model directory with seeded random weights",
		Example: `  tandem model init --preset tiny --out /tmp/tiny
  tandem model init --preset llama-1b --out ./llama-1b --dtype f16 --seed 3
  tandem model init --preset llama-1b --out ./coordinator --no-weights`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return errors.New("--preset is required (see tandem model presets)")
			}
			if _, err := preset.Get(name); err != nil {
				return fmt.Errorf("--preset: %w", err)
			}
			if out == "" {
				return errors.New("--out is required")
			}
			if shardMB < 0 {
				return fmt.Errorf("--max-shard-mb %d is negative", shardMB)
			}
			opts := preset.Options{Seed: seed, Progress: cmd.ErrOrStderr(), MaxShardSize: shardMB << 20, NoWeights: noWeights}
			if dtype != "" {
				dt, err := preset.ParseDType(dtype)
				if err != nil {
					return fmt.Errorf("--dtype: %w", err)
				}
				opts.DType = dt
			}
			if existOK {
				// Write renames a complete directory into place, so a
				// config.json there means an earlier run finished (an
				// init container run again in the same pod).
				if _, err := os.Stat(filepath.Join(out, "config.json")); err == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "%s already holds a model; left as it is\n", out)
					return nil
				}
			}
			if err := preset.Write(cmd.Context(), name, out, opts); err != nil {
				return err
			}
			abs, err := filepath.Abs(out)
			if err != nil {
				abs = out
			}
			what := "preset"
			if noWeights {
				what = "config and tokenizer of preset"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s %s to %s\n", what, name, abs)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "preset", "", "preset name (see tandem model presets)")
	f.StringVar(&out, "out", "", "directory to create; must not exist")
	f.StringVar(&dtype, "dtype", "", "weight dtype: f32, bf16 or f16 (default: the preset's)")
	f.Uint64Var(&seed, "seed", 0, "random seed; the same preset, dtype and seed give the same bytes")
	f.Int64Var(&shardMB, "max-shard-mb", 0, "split weights into shards of at most this many MiB (0: one file)")
	f.BoolVar(&noWeights, "no-weights", false, "write config.json and the tokenizer only, no weights: what a coordinator reads (it tokenizes, and runs no layer)")
	f.BoolVar(&existOK, "exist-ok", false, "succeed without writing when --out already holds a model directory (for init containers, which may run again)")
	return cmd
}

func newModelInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect DIR",
		Short: "Summarise a model directory and check its weights against config.json",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return inspect(cmd.OutOrStdout(), args[0])
		},
	}
}

func inspect(w io.Writer, dir string) error {
	cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return err
	}
	defer set.Close()
	fmt.Fprintf(w, "model_type %s (%s), %d layers, hidden %d, heads %d, kv heads %d, head_dim %d, intermediate %d\n",
		cfg.ModelType, cfg.Arch, cfg.Layers, cfg.Hidden, cfg.Heads, cfg.KVHeads, cfg.HeadDim, cfg.Intermediate)
	fmt.Fprintf(w, "vocab %d, max positions %d, tied embeddings %v", cfg.VocabSize, cfg.MaxPositions, cfg.TieEmbeddings)
	if cfg.Arch == model.Llama {
		fmt.Fprintf(w, ", rope_theta %g", cfg.RopeTheta)
		if s := cfg.RopeScaling; s != nil {
			fmt.Fprintf(w, " (%s scaling ×%g)", s.Type, s.Factor)
		}
	}
	fmt.Fprintln(w)

	var params, size int64
	dtypes := map[safetensors.DType]int{}
	names := set.Names()
	for _, n := range names {
		info, err := set.Info(n)
		if err != nil {
			return err
		}
		elems := int64(1)
		for _, d := range info.Shape {
			elems *= int64(d)
		}
		params += elems
		size += info.End - info.Begin
		dtypes[info.DType]++
	}
	var dts []string
	for d, n := range dtypes {
		dts = append(dts, fmt.Sprintf("%s×%d", d, n))
	}
	sort.Strings(dts)
	fmt.Fprintf(w, "%d tensors in %d file(s) (%s), %s parameters, %s of weights\n",
		len(names), len(set.Files()), strings.Join(dts, ", "), humanCount(params), humanBytes(size))
	if err := model.CheckTensors(cfg, set); err != nil {
		return err
	}
	fmt.Fprintf(w, "weights match config.json (%s parameters expected)\n", humanCount(cfg.Params()))
	return nil
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
