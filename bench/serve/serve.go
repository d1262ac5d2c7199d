package serve

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tandemllm/tandem/apikey"
	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/dataset"
	"github.com/tandemllm/tandem/bench/target/openai"
	"github.com/tandemllm/tandem/bench/target/tandem"
	"github.com/tandemllm/tandem/pki"
)

// Config is `tandem bench`'s flags.
type Config struct {
	Workload
	// Addr is a Tandem coordinator's gRPC address; BaseURL an
	// OpenAI-compatible server's root URL, with Endpoint the API it
	// speaks. Exactly one of Addr and BaseURL is set.
	Addr, BaseURL, Endpoint string
	// APIKey is sent as a bearer token (default: $OPENAI_API_KEY, as
	// vLLM's bench reads it; for Addr $TANDEM_API_KEY first). TLS
	// connects to Addr with TLS; CACert is the CA a TLS server's
	// certificate must chain to (default: the system's roots), for Addr
	// and for an https BaseURL.
	APIKey string
	TLS    bool
	CACert string
	// Model names the served model in requests (default: the first the
	// server lists); Tokenizer where its tokenizer is (see ResolveModel).
	Model, Tokenizer string
	// SaveResult writes one result JSON per run into ResultDir (default
	// the working directory), named ResultFilename or vLLM's default
	// name; SaveDetailed adds the generated texts.
	SaveResult, SaveDetailed  bool
	ResultDir, ResultFilename string
	Label                     string
	// Plot, when set, is the directory the charts are written to.
	Plot string
	// DisableProgress turns the progress bar off.
	DisableProgress bool
}

// Connect makes the Config's target and checks that it answers; it
// returns the served model's name and a function that closes the target.
func (c *Config) Connect(ctx context.Context) (bench.Target, string, func(), error) {
	var (
		t     bench.Target
		close func()
	)
	switch {
	case c.Addr != "" && c.BaseURL != "":
		return nil, "", nil, usage("--addr and --base-url: give one target")
	case c.Addr != "":
		if c.Endpoint != "" && c.Endpoint != openai.Completions {
			return nil, "", nil, usage("--endpoint %s: applies to --base-url only", c.Endpoint)
		}
		dial, err := c.dialOptions()
		if err != nil {
			return nil, "", nil, err
		}
		g, err := tandem.New(c.Addr, c.Model, dial...)
		if err != nil {
			return nil, "", nil, err
		}
		t, close = g, func() { g.Close() }
	case c.BaseURL != "":
		var tlsConfig *tls.Config
		if c.CACert != "" {
			var err error
			if tlsConfig, err = pki.ClientRoots(c.CACert, ""); err != nil {
				return nil, "", nil, usage("--ca-cert: %v", err)
			}
		}
		h, err := openai.New(openai.Options{BaseURL: c.BaseURL, Endpoint: c.Endpoint, Model: c.Model, APIKey: c.apiKey("OPENAI_API_KEY"), TLS: tlsConfig})
		if err != nil {
			return nil, "", nil, usage("%v", err)
		}
		t, close = h, func() { h.Close() }
	default:
		return nil, "", nil, usage("no target: give --addr HOST:PORT (a Tandem coordinator) or --base-url URL (an OpenAI-compatible server)")
	}
	served, err := t.Model(ctx)
	if err != nil {
		close()
		return nil, "", nil, err // names the flag, and says unreachable when it is
	}
	return t, served, close, nil
}

// apiKey is the key to send: APIKey, else the first of the environment
// variables set.
func (c *Config) apiKey(env ...string) string {
	if c.APIKey != "" {
		return c.APIKey
	}
	for _, e := range env {
		if k := os.Getenv(e); k != "" {
			return k
		}
	}
	return ""
}

// dialOptions are how the bench reaches a coordinator: TLS when asked,
// and the API key on every call.
func (c *Config) dialOptions() ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if c.TLS || c.CACert != "" {
		cfg, err := pki.ClientRoots(c.CACert, "") // the server name is the host of Addr
		if err != nil {
			return nil, usage("--ca-cert: %v", err)
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	if key := c.apiKey("TANDEM_API_KEY", "OPENAI_API_KEY"); key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(apikey.PerRPC(key)))
	}
	return opts, nil
}

// Backend is the backend name results carry.
func (c *Config) Backend() string {
	if c.Addr != "" {
		return "tandem"
	}
	if c.Endpoint == openai.ChatCompletions {
		return "openai-chat"
	}
	return "openai"
}

// Run is `tandem bench`: it checks every flag, reaches the target and
// builds the workload before sending anything, then runs each load point
// of the sweep in turn, printing its report to stdout (progress to
// stderr), and saves results and charts as asked.
func Run(ctx context.Context, c Config, stdout, stderr io.Writer) ([]*bench.Result, error) {
	plan, err := c.Plan()
	if err != nil {
		return nil, err
	}
	if c.ResultFilename != "" && filepath.Base(c.ResultFilename) != c.ResultFilename {
		return nil, usage("--result-filename %q: a file name; put the directory in --result-dir", c.ResultFilename)
	}
	t, served, closeTarget, err := c.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer closeTarget()
	m, err := ResolveModel(c.Tokenizer, served)
	if err != nil {
		return nil, err
	}
	reqs, err := plan.Requests(m.Tokenizer)
	if err != nil {
		return nil, err
	}
	plan.Settings.Backend, plan.Settings.Label, plan.Settings.ModelID, plan.Settings.TokenizerID = c.Backend(), c.Label, served, m.ID
	plan.Settings.Detailed = c.SaveDetailed
	var progress io.Writer
	if !c.DisableProgress {
		progress = stderr
	}
	var results []*bench.Result
	id := RunID()
	for i, pt := range plan.Points {
		run, err := bench.Execute(ctx, t, plan.Options(reqs, pt, fmt.Sprintf("%s-%d-", id, i), progress))
		if err != nil {
			return results, err
		}
		r := bench.Summarize(run, plan.Settings)
		bench.WriteReport(stdout, r)
		if c.SaveResult {
			path, err := c.save(r, len(plan.Points) > 1)
			if err != nil {
				return results, err
			}
			fmt.Fprintf(stderr, "saved %s\n", path)
		}
		results = append(results, r)
	}
	if len(results) > 1 {
		bench.WriteSweep(stdout, results)
	}
	if c.Plot != "" {
		files, err := SweepPlots(c.Plot, served, results)
		if err != nil {
			return results, err
		}
		fmt.Fprintf(stderr, "plots: %s\n", strings.Join(files, " "))
	}
	return results, nil
}

// Options are the bench options of one load point; request ids start
// with prefix.
func (p *Plan) Options(reqs []dataset.Request, pt bench.Load, prefix string, progress io.Writer) bench.Options {
	return bench.Options{
		Workload: reqs, Load: pt, IgnoreEOS: p.IgnoresEOS(), Warmups: p.NumWarmups, Seed: p.Seed,
		IDPrefix: prefix, Progress: progress, Label: pt.String(),
	}
}

// RunID is a fresh id for a run's request ids, "bench-" and 8 hex
// digits as vllm bench serve's default prefix.
func RunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "bench-" + hex.EncodeToString(b[:])
}

// save writes r as JSON; in a sweep a given file name gets the load
// point before its extension.
func (c *Config) save(r *bench.Result, sweep bool) (string, error) {
	name := r.FileName()
	if c.ResultFilename != "" {
		name = c.ResultFilename
		if sweep {
			ext := filepath.Ext(name)
			name = strings.TrimSuffix(name, ext) + "-" + r.Load.String() + ext
		}
	}
	return WriteJSON(filepath.Join(c.ResultDir, name), r)
}

// WriteJSON writes v as JSON to path, making its directory.
func WriteJSON(path string, v any) (string, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("--result-dir: %w", err)
		}
	}
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("saving results: %w", err)
	}
	return path, nil
}
