package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/engine"
)

// generateFlags are the flags of `tandem generate`.
type generateFlags struct {
	local       bool
	client      clientFlags
	modelName   string
	timeout     time.Duration
	modelDir    string
	preset      string
	maxTokens   int
	temperature float64
	topK        int
	topP        float64
	seed        int64
	stop        []string
	logprobs    int
	ignoreEOS   bool
	jsonOut     bool
	addSpecial  bool
	tp          int
	link        string
	backend     backendFlags
	engine      engineFlags
}

func newGenerateCmd() *cobra.Command {
	var f generateFlags
	cmd := &cobra.Command{
		Use:   "generate [flags] PROMPT",
		Short: "Generate text from a prompt and print the profiling summary",
		Long: `Generate text from a prompt. By default the request goes to a cluster's
coordinator at --addr (as started by "tandem up"); with --local the engine
runs in this process on the CPU backend instead. The text streams to stdout and a summary in the format of
the usual profiling write-ups (prompt_len, tokenize ms, TTFT ms, steady ms,
tokens, ms/token, tok/s, peak RSS MB) goes to stderr. --json prints one JSON
object instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case f.local && (cmd.Flags().Changed("addr") || cmd.Flags().Changed("tls") || cmd.Flags().Changed("ca-cert") || cmd.Flags().Changed("api-key")):
				return errors.New("--local and --addr (--tls, --ca-cert, --api-key) are exclusive")
			case f.link != "" && (!f.local || f.tp < 2):
				return errors.New("--link needs --local --tp 2 or more: it links the ranks of a local group")
			case f.local:
				if err := f.engine.validate(); err != nil {
					return err
				}
				return runLocalGenerate(cmd, &f, args[0])
			}
			return runRemoteGenerate(cmd, &f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.local, "local", false, "run the engine in this process")
	f.client.register(fl, "127.0.0.1:9090")
	fl.StringVar(&f.modelName, "model-name", "", "model id to ask the cluster for (without --local; empty: its only model)")
	fl.DurationVar(&f.timeout, "timeout", 5*time.Minute, "give up on the request after this long (without --local)")
	fl.StringVar(&f.modelDir, "model", "", "model directory (config.json, tokenizer.json, *.safetensors)")
	fl.StringVar(&f.preset, "preset", "", "use a preset model, created in the cache directory on first use (instead of --model)")
	fl.IntVar(&f.maxTokens, "max-tokens", 16, "most tokens to generate")
	fl.Float64Var(&f.temperature, "temperature", 0, "sampling temperature; 0 is greedy")
	fl.IntVar(&f.topK, "top-k", 0, "keep the K most likely tokens (0: all)")
	fl.Float64Var(&f.topP, "top-p", 1, "nucleus sampling probability mass (1: all)")
	fl.Int64Var(&f.seed, "seed", -1, "sampling seed (-1: random)")
	fl.StringArrayVar(&f.stop, "stop", nil, "stop string (repeatable)")
	fl.IntVar(&f.logprobs, "logprobs", 0, fmt.Sprintf("report log-probabilities with this many alternatives per token (0..%d)", engine.MaxLogprobs))
	fl.BoolVar(&f.ignoreEOS, "ignore-eos", false, "keep generating after end-of-sequence tokens")
	fl.BoolVar(&f.jsonOut, "json", false, "print one JSON object instead of streaming text and a table")
	fl.BoolVar(&f.addSpecial, "add-special-tokens", true, "let the tokenizer add its special tokens (e.g. BOS)")
	fl.IntVar(&f.tp, "tp", 1, "tensor-parallel degree: rank 0 runs here, the other ranks as worker processes")
	fl.StringVar(&f.link, "link", "", "with --local --tp N: "+linkHelp+"; rank 0's collective sockets are made in its namespace")
	f.backend.register(fl)
	f.engine.register(cmd)
	return cmd
}

func (f *generateFlags) params() (engine.SamplingParams, error) {
	p := engine.SamplingParams{
		Temperature: f.temperature, TopK: f.topK, TopP: f.topP, MaxTokens: f.maxTokens,
		Stop: f.stop, IgnoreEOS: f.ignoreEOS,
		Logprobs: f.logprobs > 0, TopLogprobs: f.logprobs,
	}
	if f.seed >= 0 {
		s := uint64(f.seed)
		p.Seed = &s
	}
	if err := p.Validate(); err != nil {
		return p, flagError(err)
	}
	return p, nil
}

// flagError rewords a sampling-parameter error with the CLI's flag names.
func flagError(err error) error {
	msg := err.Error()
	for api, flag := range map[string]string{
		"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p",
		"max_tokens": "--max-tokens", "top_logprobs": "--logprobs", "stop strings": "--stop",
	} {
		if strings.Contains(msg, api) {
			return fmt.Errorf("invalid %s: %w", flag, err)
		}
	}
	return err
}

// generateResult is the --json output and the source of the summary.
type generateResult struct {
	Model          string           `json:"model"`
	RequestID      string           `json:"request_id,omitempty"`
	PromptTokenIDs []int32          `json:"prompt_token_ids"`
	TokenIDs       []int32          `json:"token_ids"`
	Text           string           `json:"text"`
	FinishReason   string           `json:"finish_reason"`
	PromptLen      int              `json:"prompt_len"`
	TokenizeMs     float64          `json:"tokenize_ms"`
	TTFTMs         float64          `json:"ttft_ms"`
	SteadyMs       float64          `json:"steady_ms"`
	Tokens         int              `json:"tokens"`
	MsPerToken     float64          `json:"ms_per_token"`
	TokensPerS     float64          `json:"tokens_per_s"`
	PeakRSSMB      float64          `json:"peak_rss_mb"`
	Logprobs       []tokenLogprobJS `json:"logprobs,omitempty"`
}

type tokenLogprobJS struct {
	Token       int32            `json:"token"`
	Text        string           `json:"text"`
	Logprob     float32          `json:"logprob"`
	TopLogprobs []tokenLogprobJS `json:"top_logprobs,omitempty"`
}

// finishTiming fills the derived figures: steady is the time after the
// first token, shared by the remaining tokens.
func (r *generateResult) finishTiming(start, first, end time.Time) {
	r.Tokens = len(r.TokenIDs)
	r.PromptLen = len(r.PromptTokenIDs)
	r.TTFTMs = ms(first.Sub(start))
	r.SteadyMs = ms(end.Sub(first))
	if r.Tokens > 1 {
		r.MsPerToken = r.SteadyMs / float64(r.Tokens-1)
		r.TokensPerS = 1000 / r.MsPerToken
	}
	r.PeakRSSMB = peakRSSMB()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// peakRSSMB is the process's peak resident set size.
func peakRSSMB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024 // Linux reports KiB
}

func (r *generateResult) writeSummary(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "prompt_len\ttokenize ms\tTTFT ms\tsteady ms\ttokens\tms/token\ttok/s\tpeak RSS MB")
	fmt.Fprintf(tw, "%d\t%.2f\t%.2f\t%.2f\t%d\t%.2f\t%.1f\t%.0f\n",
		r.PromptLen, r.TokenizeMs, r.TTFTMs, r.SteadyMs, r.Tokens, r.MsPerToken, r.TokensPerS, r.PeakRSSMB)
	tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
