package serve

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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
	// OpenAI-compatible server's root URL (or its /v1 API base), with
	// Endpoint the API it speaks. Exactly one of Addr and BaseURL is set.
	// Backend, vllm bench serve's --backend, may name the endpoint
	// instead: openai and vllm (/v1/completions), openai-chat
	// (/v1/chat/completions); tandem with Addr. Default: tandem for Addr,
	// else openai or openai-chat by the endpoint.
	Addr, BaseURL, Endpoint, Backend string
	// Headers are KEY=VALUE pairs (--header) sent with every request: as
	// HTTP headers, or for Addr as gRPC metadata (keys in lower case).
	Headers []string
	// Temperature, TopP and TopK, when set, are sent with every request;
	// otherwise the server's defaults hold.
	Temperature, TopP *float64
	TopK              *int
	// RequestIDPrefix starts every request id (default "bench-" and 8
	// random hex digits and "-"; in a sweep the point's index and "-"
	// follow it).
	RequestIDPrefix string
	// APIKey is sent as a bearer token (default: $OPENAI_API_KEY, as
	// vLLM's bench reads it, then $TANDEM_API_KEY; for Addr
	// $TANDEM_API_KEY first). TLS
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
	// name; SaveDetailed adds the generated texts. AppendResult saves
	// too, appending each result as one line to the file (in a sweep,
	// every point to the one ResultFilename) instead of replacing it.
	SaveResult, SaveDetailed, AppendResult bool
	ResultDir, ResultFilename              string
	Label                                  string
	// Metadata are KEY=VALUE pairs (--metadata) stored as top-level keys
	// of every result JSON.
	Metadata []string
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
	k, _, err := c.check(bench.Settings{})
	if err != nil {
		return nil, "", nil, err
	}
	switch {
	case c.Addr != "" && c.BaseURL != "":
		return nil, "", nil, usage("--addr and --base-url: give one target")
	case c.Addr != "":
		dial, err := c.dialOptions(k.headers)
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
		headers := map[string]string{}
		for _, h := range k.headers {
			headers[h[0]] = h[1]
		}
		h, err := openai.New(openai.Options{BaseURL: c.BaseURL, Endpoint: k.endpoint, Model: c.Model,
			APIKey: c.apiKey("OPENAI_API_KEY", "TANDEM_API_KEY"), Headers: headers, TLS: tlsConfig})
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
// and the API key and --header metadata on every call.
func (c *Config) dialOptions(headers [][2]string) ([]grpc.DialOption, error) {
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
	if len(headers) > 0 {
		md := metadataCreds{}
		for _, h := range headers {
			md[strings.ToLower(h[0])] = h[1]
		}
		opts = append(opts, grpc.WithPerRPCCredentials(md))
	}
	return opts, nil
}

// metadataCreds sends --header pairs as metadata on every call.
type metadataCreds map[string]string

func (m metadataCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return m, nil
}

func (metadataCreds) RequireTransportSecurity() bool { return false }

// ErrAllFailed is wrapped by Run's error when every request of a load
// point failed; the point's result was reported and saved first.
var ErrAllFailed = errors.New("every request failed")

// Run is `tandem bench`: it checks every flag, reaches the target and
// builds the workload before sending anything, then runs each load point
// of the sweep in turn, printing its report to stdout (progress to
// stderr), and saves results and charts as asked. A point whose every
// request failed ends the sweep with ErrAllFailed; an interrupted run
// (ctx ended) reports and saves its partial result, marked
// "interrupted", and returns ctx's error.
func Run(ctx context.Context, c Config, stdout, stderr io.Writer) ([]*bench.Result, error) {
	plan, err := c.Plan()
	if err != nil {
		return nil, err
	}
	k, meta, err := c.check(plan.Settings)
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
	if err := plan.checkContext(reqs, m); err != nil {
		return nil, err
	}
	plan.Settings.Backend, plan.Settings.Label, plan.Settings.ModelID, plan.Settings.TokenizerID = k.backend, c.Label, served, m.ID
	plan.Settings.Detailed, plan.Settings.Metadata = c.SaveDetailed, meta
	var progress io.Writer
	if !c.DisableProgress {
		progress = stderr
	}
	var results []*bench.Result
	base := c.RequestIDPrefix
	if base == "" {
		base = RunID() + "-"
	}
	for i, pt := range plan.Points {
		prefix := base
		if len(plan.Points) > 1 {
			prefix += strconv.Itoa(i) + "-" // ids stay unique across the sweep
		}
		o := plan.Options(reqs, pt, prefix, progress)
		o.Sampling = k.sampling
		run, runErr := bench.Execute(ctx, t, o)
		if run == nil {
			return results, runErr
		}
		r := bench.Summarize(run, plan.Settings)
		r.Interrupted = runErr != nil
		bench.WriteReport(stdout, r)
		results = append(results, r)
		saved := ""
		if c.SaveResult || c.AppendResult {
			if saved, err = c.save(r, len(plan.Points) > 1); err != nil {
				return results, err
			}
			fmt.Fprintf(stderr, "saved %s\n", saved)
		}
		if runErr != nil {
			return results, fmt.Errorf("%s: interrupted after %d of %d requests%s: %w", pt, r.Completed+r.Failed-r.ErrorsByCode[bench.NotSent], r.NumPrompts, savedNote(saved), runErr)
		}
		if r.Completed == 0 {
			return results, fmt.Errorf("%s: %w (%s)%s; is the target serving?", pt, ErrAllFailed, failures(r), savedNote(saved))
		}
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

func savedNote(path string) string {
	if path == "" {
		return ""
	}
	return "; result saved to " + path
}

// failures lists a result's failures by code, and the first message.
func failures(r *bench.Result) string {
	codes := make([]string, 0, len(r.ErrorsByCode))
	for code, n := range r.ErrorsByCode {
		codes = append(codes, fmt.Sprintf("%s: %d", code, n))
	}
	slices.Sort(codes)
	first := ""
	for _, e := range r.Errors {
		if e != "" {
			first = "; first: " + e
			break
		}
	}
	return strings.Join(codes, ", ") + first
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
// point before its extension, unless results are appended to it.
func (c *Config) save(r *bench.Result, sweep bool) (string, error) {
	name := r.FileName()
	if c.ResultFilename != "" {
		name = c.ResultFilename
		if sweep && !c.AppendResult {
			ext := filepath.Ext(name)
			name = strings.TrimSuffix(name, ext) + "-" + r.Load.String() + ext
		}
	}
	path := filepath.Join(c.ResultDir, name)
	if c.AppendResult {
		return AppendJSON(path, r)
	}
	return WriteJSON(path, r)
}

// AppendJSON appends v to path as one line of JSON, as vllm bench
// serve's --append-result does (each run a line), making the file and
// its directory when missing.
func AppendJSON(path string, v any) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("--result-dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return "", fmt.Errorf("--append-result: %w", err)
	}
	// A file another writer (vllm bench serve) left without a last
	// newline gets one, so that every result keeps its own line.
	last := []byte{'\n'}
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		_, _ = f.ReadAt(last, st.Size()-1)
	}
	if last[0] != '\n' {
		data = append([]byte{'\n'}, data...)
	}
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("--append-result %s: %w", path, err)
	}
	return path, nil
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
