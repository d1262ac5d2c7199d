package main

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tandemllm/tandem/bench/serve"
)

func newBenchCmd() *cobra.Command {
	c := serve.Config{Workload: serve.DefaultWorkload()}
	var v vllmFlags
	cmd := &cobra.Command{
		Use:   "bench (--addr HOST:PORT | --base-url URL) [flags]",
		Short: "Load-test a Tandem cluster or any OpenAI-compatible server, as vllm bench serve does",
		Long: `Send a workload (random prompts of exact token lengths, ShareGPT, or a JSONL
file) to a Tandem coordinator over gRPC (--addr) or to any OpenAI-compatible
server over HTTP (--base-url, --endpoint), at a Poisson or gamma request rate
under a concurrency limit, and report TTFT, TPOT, ITL and end-to-end latency,
throughput and goodput with vllm bench serve's names. Comma lists in
--request-rate or --max-concurrency sweep the points in turn. --save-result
writes vLLM's result JSON (plus request_ids, which join each sample to its
server trace); --plot DIR draws latency CDFs, ITL by token position and
throughput against P99 latency.

--goodput, --metadata and --header take several pairs after one flag, as
vLLM's do: --goodput ttft:500 tpot:50 e2el:5000, --metadata tp=2 run=a.

Every request failing exits non-zero (after the report and the saved
result), as does an interrupt (Ctrl-C), which saves the partial result
marked "interrupted".`,
		// Flags are parsed here, so that pairs after --goodput, --metadata
		// and --header go to the flag they follow, as argparse's nargs do.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			if err := fl.Parse(spreadPairs(args, "--goodput", "--metadata", "--header")); err != nil {
				return err
			}
			if help, _ := fl.GetBool("help"); help {
				return cmd.Help()
			}
			if fl.NArg() > 0 {
				return fmt.Errorf("unexpected arguments %q", strings.Join(fl.Args(), " "))
			}
			if err := v.apply(fl, &c); err != nil {
				return err
			}
			_, err := serve.Run(cmd.Context(), c, cmd.OutOrStdout(), cmd.ErrOrStderr())
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&c.Addr, "addr", "", "a Tandem coordinator's gRPC address")
	fl.StringVar(&c.BaseURL, "base-url", "", "an OpenAI-compatible server's root URL, such as http://127.0.0.1:8000 (its API base, http://127.0.0.1:8000/v1, is taken too)")
	fl.StringVar(&v.host, "host", "127.0.0.1", "with --port, instead of --base-url: the server is http://HOST:PORT")
	fl.IntVar(&v.port, "port", 8000, "with --host, instead of --base-url: the server is http://HOST:PORT")
	fl.StringVar(&c.Endpoint, "endpoint", "", "with --base-url: /v1/completions (default) or /v1/chat/completions")
	fl.StringVar(&c.Backend, "backend", "", "vllm bench serve's backend: openai or vllm (/v1/completions), openai-chat (/v1/chat/completions); tandem for --addr")
	fl.StringArrayVar(&c.Headers, "header", nil, "KEY=VALUE headers sent with every request (gRPC metadata with --addr); several may follow the flag")
	fl.StringArrayVar(&c.Metadata, "metadata", nil, "KEY=VALUE pairs stored in the result JSON; several may follow the flag")
	fl.StringVar(&c.RequestIDPrefix, "request-id-prefix", "", "prefix of the request ids (default: bench-XXXXXXXX-; a sweep adds the point's index)")
	fl.Float64Var(&v.temperature, "temperature", 0, "sampling temperature sent with every request (default: the server's)")
	fl.Float64Var(&v.topP, "top-p", 1, "top-p sent with every request (default: the server's)")
	fl.IntVar(&v.topK, "top-k", -1, "top-k sent with every request, -1 for all (default: the server's)")
	fl.StringVar(&c.APIKey, "api-key", "", "API key sent as a bearer token (default: $TANDEM_API_KEY then $OPENAI_API_KEY for --addr; $OPENAI_API_KEY then $TANDEM_API_KEY for --base-url)")
	fl.BoolVar(&c.TLS, "tls", false, "with --addr: connect with TLS (an https --base-url always does)")
	fl.StringVar(&c.CACert, "ca-cert", "", "PEM CA certificate the server's certificate must chain to (default: the system's roots; implies --tls)")
	fl.StringVar(&c.Model, "model", "", "the served model requests name (default: the first the server lists)")
	fl.StringVar(&c.Tokenizer, "tokenizer", "", "the served model's tokenizer: a preset name, a model directory or a tokenizer.json (default: the served model, when it is a preset)")
	workloadFlags(fl, &c.Workload)
	fl.IntVar(&v.inputLen, "input-len", 0, "the random dataset's prompt tokens (sets --random-input-len)")
	fl.IntVar(&v.outputLen, "output-len", 0, "every dataset's output tokens (sets --random-output-len, --sharegpt-output-len, --jsonl-output-len, --prefix-repetition-output-len)")
	fl.BoolVar(&c.SaveResult, "save-result", false, "write each run's result JSON (vLLM's keys)")
	fl.BoolVar(&c.SaveDetailed, "save-detailed", false, "also keep the generated texts in the result JSON")
	fl.BoolVar(&c.AppendResult, "append-result", false, "append each result as a line to the result file (a sweep's points to one --result-filename)")
	fl.StringVar(&c.ResultDir, "result-dir", "", "directory for result JSON (default: the working directory)")
	fl.StringVar(&c.ResultFilename, "result-filename", "", "result file name (default: LABEL-RATEqps[-concurrencyN]-MODEL-DATE.json)")
	fl.StringVar(&c.Label, "label", "", "label of the results (default: the backend)")
	fl.StringVar(&c.Plot, "plot", "", "directory to write the charts to (PNG and SVG)")
	fl.BoolVar(&c.DisableProgress, "disable-tqdm", false, "no progress bar")
	cmd.AddCommand(newBenchCompareCmd())
	return cmd
}

// workloadFlags registers the workload flags `bench` and `bench compare`
// share, with vllm bench serve's names.
func workloadFlags(fl *pflag.FlagSet, w *serve.Workload) {
	fl.StringVar(&w.DatasetName, "dataset-name", w.DatasetName, "random, prefix_repetition, sharegpt or jsonl")
	fl.StringVar(&w.DatasetPath, "dataset-path", "", "the dataset file (sharegpt: a JSON array of conversations; jsonl: {\"prompt\", \"output_tokens\"} a line)")
	fl.IntVar(&w.NumPrompts, "num-prompts", w.NumPrompts, "number of requests")
	fl.IntVar(&w.RandomInputLen, "random-input-len", w.RandomInputLen, "random dataset: prompt tokens")
	fl.IntVar(&w.RandomOutputLen, "random-output-len", w.RandomOutputLen, "random dataset: output tokens")
	fl.Float64Var(&w.RandomRangeRatio, "random-range-ratio", w.RandomRangeRatio, "random dataset: lengths uniform in [len·(1−r), len·(1+r)]")
	fl.IntVar(&w.PrefixRepetitionPrefixLen, "prefix-repetition-prefix-len", w.PrefixRepetitionPrefixLen, "prefix_repetition: tokens of each shared prefix")
	fl.IntVar(&w.PrefixRepetitionSuffixLen, "prefix-repetition-suffix-len", w.PrefixRepetitionSuffixLen, "prefix_repetition: tokens of each prompt's own suffix")
	fl.IntVar(&w.PrefixRepetitionNumPrefixes, "prefix-repetition-num-prefixes", w.PrefixRepetitionNumPrefixes, "prefix_repetition: distinct prefixes, each shared by num-prompts/this prompts")
	fl.IntVar(&w.PrefixRepetitionOutputLen, "prefix-repetition-output-len", w.PrefixRepetitionOutputLen, "prefix_repetition: output tokens")
	fl.IntVar(&w.ShareGPTOutputLen, "sharegpt-output-len", 0, "sharegpt: output tokens of every request (default: the reply's length)")
	fl.IntVar(&w.JSONLOutputLen, "jsonl-output-len", 0, "jsonl: output tokens of every request (default: each line's output_tokens, else 256)")
	fl.Uint64Var(&w.Seed, "seed", w.Seed, "seed of the prompts and arrival times")
	fl.BoolVar(&w.IgnoreEOS, "ignore-eos", false, "generate every asked token (always on for the random and prefix_repetition datasets)")
	fl.IntVar(&w.NumWarmups, "num-warmups", 0, "requests sent before the measured run")
	fl.StringVar(&w.RequestRate, "request-rate", w.RequestRate, "requests per second, or inf for all at once; a comma list sweeps")
	fl.Float64Var(&w.Burstiness, "burstiness", w.Burstiness, "gamma shape of the arrival gaps (1: Poisson; lower: burstier)")
	fl.StringVar(&w.MaxConcurrency, "max-concurrency", "", "most requests in flight (default: no limit); a comma list sweeps")
	fl.StringVar(&w.MetricPercentiles, "metric-percentiles", w.MetricPercentiles, "percentiles reported, each in (0, 100)")
	fl.StringVar(&w.PercentileMetrics, "percentile-metrics", w.PercentileMetrics, "metrics reported: ttft, tpot, itl, e2el")
	fl.StringSliceVar(&w.Goodput, "goodput", nil, "SLOs for goodput as KEY:MS (ttft, tpot, e2el); several may follow the flag")
}

// vllmFlags are vllm bench serve's flags that set Config fields only
// when given: --host/--port (the server, as --base-url), --input-len and
// --output-len (the datasets' lengths), and the sampling parameters.
type vllmFlags struct {
	host                            string
	port, inputLen, outputLen, topK int
	temperature, topP               float64
}

// apply sets in c what the flags given say.
func (v *vllmFlags) apply(fl *pflag.FlagSet, c *serve.Config) error {
	if fl.Changed("host") || fl.Changed("port") {
		// vllm bench serve's other way to name the server.
		if c.BaseURL != "" || c.Addr != "" {
			return fmt.Errorf("--host/--port name the server as --base-url does: give one")
		}
		c.BaseURL = "http://" + net.JoinHostPort(v.host, strconv.Itoa(v.port))
	}
	// vllm bench serve's general lengths: --input-len is the random
	// dataset's, --output-len every dataset's.
	for name, n := range map[string]int{"input-len": v.inputLen, "output-len": v.outputLen} {
		if fl.Changed(name) && n < 1 {
			return fmt.Errorf("%w: --%s %d: must be >= 1", serve.ErrUsage, name, n)
		}
	}
	if fl.Changed("input-len") {
		c.RandomInputLen = v.inputLen
	}
	if fl.Changed("output-len") {
		c.RandomOutputLen, c.ShareGPTOutputLen, c.JSONLOutputLen, c.PrefixRepetitionOutputLen = v.outputLen, v.outputLen, v.outputLen, v.outputLen
	}
	if fl.Changed("temperature") {
		c.Temperature = &v.temperature
	}
	if fl.Changed("top-p") {
		c.TopP = &v.topP
	}
	if fl.Changed("top-k") {
		c.TopK = &v.topK
	}
	return nil
}

// spreadPairs rewrites "--flag a b c" as "--flag a --flag b --flag c"
// for the flags named, which take several values as argparse's nargs
// do: the values run until the next argument starting with "-". A flag
// left without a value stays bare, for the parser to refuse.
func spreadPairs(args []string, flags ...string) []string {
	var out []string
	cur, values := "", 0
	end := func() {
		if cur != "" && values == 0 {
			out = append(out, cur)
		}
		cur, values = "", 0
	}
	for i, a := range args {
		switch {
		case a == "--":
			end()
			return append(out, args[i:]...)
		case strings.HasPrefix(a, "-"):
			end()
			if name, _, inline := strings.Cut(a, "="); slices.Contains(flags, name) {
				cur = name
				if inline {
					out, values = append(out, a), 1
				}
				continue
			}
			out = append(out, a)
		case cur != "":
			out, values = append(out, cur, a), values+1
		default:
			out = append(out, a)
		}
	}
	end()
	return out
}

// goodputArgs takes the positional arguments after --goodput as more
// KEY:MS pairs (vLLM's --goodput takes several); any other positional
// argument is an error.
func goodputArgs(fl *pflag.FlagSet, goodput *[]string, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if !fl.Changed("goodput") {
		return fmt.Errorf("unexpected arguments %q", strings.Join(args, " "))
	}
	*goodput = append(*goodput, args...)
	return nil
}
