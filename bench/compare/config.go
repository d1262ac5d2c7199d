package compare

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/tandemllm/tandem/bench/serve"
	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/parallel"
)

// Config is `tandem bench compare`'s flags.
type Config struct {
	serve.Workload
	// Targets are running deployments: NAME=HOST:PORT, a Tandem
	// coordinator's gRPC address, or NAME=URL (http:// or https://), any
	// OpenAI-compatible server's root, spoken to at Endpoint.
	Targets []string
	// Endpoint is the URL targets' API: /v1/completions (default) or
	// /v1/chat/completions.
	Endpoint string
	// TraceAddrs, NAME=HOST:PORT, name the gRPC address of the Tandem
	// coordinator behind a URL target, whose traces then join its
	// requests (a gRPC target's traces come from its own address; a URL
	// target without one gets no cost split).
	TraceAddrs []string
	// TPs and Modes (comma lists) make local clusters, one per pair:
	// unified groups of TP n, or a prefill and a decode group of TP n.
	TPs, Modes string
	// ConfigFiles are local clusters described in YAML (UpFile).
	ConfigFiles []string
	// Preset or ModelDir is the model of the local clusters (default the
	// tiny preset); Tokenizer the targets' tokenizer (see
	// serve.ResolveModel) when they do not serve a preset.
	Preset, ModelDir, Tokenizer string
	// Link, when set, is passed to every local cluster as --link.
	Link string
	// Rounds is the number of rounds (default 1); timing differences
	// need stats.MinRounds for an interval.
	Rounds int
	// WarmupsGiven says that Workload.NumWarmups was given (0 included);
	// otherwise every load point gets AutoWarmups.
	WarmupsGiven bool
	// APIKey, when set, is sent with every call to every configuration
	// (default: $TANDEM_API_KEY; for URL targets $OPENAI_API_KEY first);
	// a cluster without keys ignores it.
	APIKey string
	// CACert is the PEM CA that the certificates of the configurations
	// serving TLS chain to: local clusters given --tls-cert (in their
	// args) and https URL targets (default for these: the system's
	// roots). A gRPC target is always reached in plain text.
	CACert string
	// ResultDir/ResultFilename name the report JSON (default
	// compare-MODEL-DATE.json in the working directory); Plot is the
	// charts' directory.
	ResultDir, ResultFilename, Plot string
	// Executable is the tandem binary local clusters run (default: this
	// process's own).
	Executable string
	// SaveDetailed keeps the per-request arrays in the report JSON.
	SaveDetailed bool
	// DisableProgress turns progress off; Verbose copies the clusters'
	// output to stderr.
	DisableProgress, Verbose bool

	clientTLS *tls.Config // from CACert, made by Run
}

// Configuration is one side of the comparison.
type Configuration struct {
	Name string `json:"name"`
	// Addr is a running deployment's coordinator (gRPC), URL an
	// OpenAI-compatible server's root; UpArgs the `tandem up` flags of a
	// local cluster.
	Addr   string   `json:"addr,omitempty"`
	URL    string   `json:"url,omitempty"`
	UpArgs []string `json:"up_args,omitempty"`
	// TraceAddr is the gRPC address the traces of a URL target's
	// requests are fetched from ("" for none).
	TraceAddr string `json:"trace_addr,omitempty"`
	// Groups are the local cluster's groups (role and TP), for checking
	// the topology before anything starts.
	Groups []Group `json:"-"`
	// Model is where a local cluster's model comes from: a preset name
	// or a model directory.
	Model string `json:"model,omitempty"`
}

// Group is one worker group of a local configuration.
type Group struct {
	Role string
	TP   int
}

// UpFile is a --config file: a `tandem up` topology, with that command's
// flag names as keys.
type UpFile struct {
	Name          string   `json:"name"`
	Preset        string   `json:"preset"`
	Model         string   `json:"model"`
	Mode          string   `json:"mode"`
	TP            int      `json:"tp"`
	Groups        int      `json:"groups"`
	PrefillTP     int      `json:"prefill-tp"`
	DecodeTP      int      `json:"decode-tp"`
	PrefillGroups int      `json:"prefill-groups"`
	DecodeGroups  int      `json:"decode-groups"`
	Link          string   `json:"link"`
	Args          []string `json:"args"`
}

// ErrUsage is wrapped by every error about a flag or configuration file.
var ErrUsage = serve.ErrUsage

func usage(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUsage}, args...)...)
}

// Configurations are the comparison's sides in the order given: targets,
// then --tp × --modes, then --config files.
func (c *Config) Configurations() ([]Configuration, error) {
	out, err := c.targets()
	if err != nil {
		return nil, err
	}
	model, spec := c.modelArgs()
	if c.TPs != "" || c.Modes != "" {
		tps, err := ints("--tp", c.TPs, "2")
		if err != nil {
			return nil, err
		}
		modes := strings.Split(c.Modes, ",")
		if c.Modes == "" {
			modes = []string{"unified"}
		}
		for _, m := range modes {
			for _, tp := range tps {
				n := strconv.Itoa(tp)
				switch strings.TrimSpace(m) {
				case "unified":
					out = append(out, Configuration{Name: "unified-tp" + n, UpArgs: append([]string{"--mode", "unified", "--tp", n}, model...),
						Groups: []Group{{"unified", tp}}, Model: spec})
				case "disaggregated":
					out = append(out, Configuration{Name: "disagg-tp" + n, UpArgs: append([]string{"--mode", "disaggregated", "--prefill-tp", n, "--decode-tp", n}, model...),
						Groups: []Group{{"prefill", tp}, {"decode", tp}}, Model: spec})
				default:
					return nil, usage("--modes %q: each must be unified or disaggregated", m)
				}
			}
		}
	}
	for _, f := range c.ConfigFiles {
		cf, err := readUpFile(f, model, spec)
		if err != nil {
			return nil, err
		}
		out = append(out, cf)
	}
	if c.Link != "" {
		for i := range out {
			if out[i].UpArgs != nil && !slices.Contains(out[i].UpArgs, "--link") {
				out[i].UpArgs = append(out[i].UpArgs, "--link", c.Link)
			}
		}
	}
	if len(out) < 2 {
		return nil, usage("a comparison needs two or more configurations: --target NAME=HOST:PORT (repeated), --tp 2,8 with --modes, or --config FILE.yaml (repeated)")
	}
	seen := map[string]bool{}
	for _, cf := range out {
		if seen[cf.Name] {
			return nil, usage("configuration %q given twice: names must differ", cf.Name)
		}
		seen[cf.Name] = true
	}
	return out, nil
}

// targets are the --target configurations, with their --trace-addr.
func (c *Config) targets() ([]Configuration, error) {
	var out []Configuration
	for _, t := range c.Targets {
		name, addr, ok := strings.Cut(t, "=")
		if !ok || name == "" || addr == "" {
			return nil, usage("--target %q: want NAME=HOST:PORT (a Tandem coordinator's gRPC address) or NAME=http://HOST:PORT (an OpenAI-compatible server)", t)
		}
		cf := Configuration{Name: name, Addr: addr}
		if strings.Contains(addr, "://") {
			if !strings.HasPrefix(addr, "http://") && !strings.HasPrefix(addr, "https://") {
				return nil, usage("--target %s: URL %q must start with http:// or https://", name, addr)
			}
			cf.Addr, cf.URL = "", addr
		}
		out = append(out, cf)
	}
	for _, t := range c.TraceAddrs {
		name, addr, ok := strings.Cut(t, "=")
		i := slices.IndexFunc(out, func(cf Configuration) bool { return cf.Name == name })
		switch {
		case !ok || name == "" || addr == "":
			return nil, usage("--trace-addr %q: want NAME=HOST:PORT", t)
		case i < 0 || out[i].URL == "":
			return nil, usage("--trace-addr %s: no --target %s=URL (a gRPC target's traces come from its own address)", name, name)
		}
		out[i].TraceAddr = addr
	}
	if c.Endpoint != "" && !slices.ContainsFunc(out, func(cf Configuration) bool { return cf.URL != "" }) {
		return nil, usage("--endpoint %s: applies to --target NAME=URL only", c.Endpoint)
	}
	return out, nil
}

// modelArgs are the model flags of local clusters, and the model's
// spec for serve.ResolveModel.
func (c *Config) modelArgs() ([]string, string) {
	if c.ModelDir != "" {
		return []string{"--model", c.ModelDir}, c.ModelDir
	}
	p := c.Preset
	if p == "" {
		p = "tiny"
	}
	return []string{"--preset", p}, p
}

// readUpFile reads a --config file into a configuration.
func readUpFile(path string, model []string, spec string) (Configuration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Configuration{}, usage("--config: %v", err)
	}
	var f UpFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return Configuration{}, usage("--config %s: %v", path, err)
	}
	if f.Name == "" {
		return Configuration{}, usage("--config %s: no name", path)
	}
	cf := Configuration{Name: f.Name}
	switch {
	case f.Model != "":
		cf.UpArgs, cf.Model = []string{"--model", f.Model}, f.Model
	case f.Preset != "":
		cf.UpArgs, cf.Model = []string{"--preset", f.Preset}, f.Preset
	default:
		cf.UpArgs, cf.Model = slices.Clone(model), spec
	}
	add := func(flag string, v int) {
		if v != 0 {
			cf.UpArgs = append(cf.UpArgs, flag, strconv.Itoa(v))
		}
	}
	switch f.Mode {
	case "unified":
		cf.UpArgs = append(cf.UpArgs, "--mode", "unified")
		add("--tp", f.TP)
		add("--groups", f.Groups)
		cf.Groups = repeat(Group{"unified", or(f.TP, 2)}, or(f.Groups, 1))
	case "", "disaggregated":
		cf.UpArgs = append(cf.UpArgs, "--mode", "disaggregated")
		add("--prefill-tp", f.PrefillTP)
		add("--decode-tp", f.DecodeTP)
		add("--prefill-groups", f.PrefillGroups)
		add("--decode-groups", f.DecodeGroups)
		cf.Groups = append(repeat(Group{"prefill", or(f.PrefillTP, 2)}, or(f.PrefillGroups, 1)),
			repeat(Group{"decode", or(f.DecodeTP, 2)}, or(f.DecodeGroups, 1))...)
	default:
		return Configuration{}, usage("--config %s: mode %q: must be unified or disaggregated", path, f.Mode)
	}
	if f.Link != "" {
		cf.UpArgs = append(cf.UpArgs, "--link", f.Link)
	}
	cf.UpArgs = append(cf.UpArgs, f.Args...)
	return cf, nil
}

func or(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func repeat(g Group, n int) []Group {
	out := make([]Group, n)
	for i := range out {
		out[i] = g
	}
	return out
}

// ints parses a comma list of positive integers (def when empty).
func ints(flag, s, def string) ([]int, error) {
	if s == "" {
		s = def
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 {
			return nil, usage("%s %q: each must be an integer >= 1", flag, f)
		}
		out = append(out, v)
	}
	return out, nil
}

// checkTopology refuses, before anything starts, a local configuration
// whose TP degree does not split the model.
func checkTopology(cfgs []Configuration, m *model.Config) error {
	if m == nil {
		return nil
	}
	g := parallel.Geometry{Heads: m.Heads, KVHeads: m.KVHeads, HeadDim: m.HeadDim, Intermediate: m.Intermediate, Vocab: m.VocabSize}
	for _, c := range cfgs {
		for _, gr := range c.Groups {
			if _, err := parallel.New(g, gr.TP, 0); err != nil {
				if errors.Is(err, parallel.ErrIndivisible) {
					return usage("configuration %s: TP %d: %v", c.Name, gr.TP, err)
				}
				return err
			}
		}
	}
	return nil
}
