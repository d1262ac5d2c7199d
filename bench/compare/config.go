package compare

import (
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/tandemllm/tandem/bench/serve"
	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/netshape"
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
	// Link, when set, is passed to every local cluster as --link (a
	// --config file's own link wins).
	Link string
	// KVCacheDType (auto, fp32, bf16 or fp16), when set, is passed to every
	// local cluster as --kv-cache-dtype (a --config file's own wins), and
	// says which cache dtype the --target deployments run, for their
	// analytic KV bytes (unknown otherwise).
	KVCacheDType string
	// Baseline names the configuration the others are compared with
	// (default: the first); Pairwise compares every pair instead.
	Baseline string
	Pairwise bool
	// Rounds is the number of rounds (default 1); timing differences
	// need stats.MinRounds for an interval.
	Rounds int
	// Confidence is the family-wise level of the intervals of one pair
	// of configurations at one load point, shared over its metrics by
	// Bonferroni (default DefaultConfidence): the chance that none of
	// them names a winner where there is none.
	Confidence float64
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

// confidence is Confidence, or DefaultConfidence where it is unset.
func (c Config) confidence() float64 {
	if c.Confidence == 0 {
		return DefaultConfidence
	}
	return c.Confidence
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
	// KVCacheDType is the KV cache dtype it runs with (fp32, bf16 or fp16),
	// from its tandem up flags and model, or what --kv-cache-dtype says
	// of a target; "unknown" when neither tells (then it has no analytic
	// KV bytes).
	KVCacheDType string `json:"kv_cache_dtype"`
	// file is the --config file it was read from.
	file string
}

// Group is one worker group of a local configuration.
type Group struct {
	Role string
	TP   int
}

// UpFile is a --config file: a `tandem up` topology, with that command's
// flag names as keys. A number left out takes tandem up's default; one
// given must be at least 1. tp and groups belong to mode unified,
// prefill-tp, decode-tp, prefill-groups and decode-groups to mode
// disaggregated (the default, as tandem up's).
type UpFile struct {
	Name          string   `json:"name"`
	Preset        string   `json:"preset"`
	Model         string   `json:"model"`
	Mode          string   `json:"mode"`
	TP            *int     `json:"tp"`
	Groups        *int     `json:"groups"`
	PrefillTP     *int     `json:"prefill-tp"`
	DecodeTP      *int     `json:"decode-tp"`
	PrefillGroups *int     `json:"prefill-groups"`
	DecodeGroups  *int     `json:"decode-groups"`
	KVCacheDType  string   `json:"kv-cache-dtype"`
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
	if err := c.checkFlags(); err != nil {
		return nil, err
	}
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
	for _, add := range []struct{ flag, v string }{{"--link", c.Link}, {"--kv-cache-dtype", c.KVCacheDType}} {
		for i := range out {
			if add.v != "" && out[i].local() && !slices.Contains(out[i].UpArgs, add.flag) {
				out[i].UpArgs = append(out[i].UpArgs, add.flag, add.v)
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
	if c.Baseline != "" && !seen[c.Baseline] {
		return nil, usage("--baseline %q: no such configuration (have %s)", c.Baseline, strings.Join(names(out), ", "))
	}
	if c.Baseline != "" && c.Pairwise {
		return nil, usage("--baseline and --pairwise: give one (--pairwise compares every pair)")
	}
	return out, nil
}

// checkHostPort checks a HOST:PORT address's form and port.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want HOST:PORT: %w", err)
	}
	return checkPort(port)
}

func checkPort(port string) error {
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: must be a number from 1 to 65535", port)
	}
	return nil
}

func names(cfgs []Configuration) []string {
	var out []string
	for _, cf := range cfgs {
		out = append(out, cf.Name)
	}
	return out
}

// checkFlags checks the flags that apply to every configuration.
func (c *Config) checkFlags() error {
	if c.Link != "" {
		if _, err := netshape.Lookup(c.Link); err != nil {
			return usage("--link: %v", err)
		}
		if err := netshape.Check(); err != nil {
			return usage("--link %s: %v", c.Link, err)
		}
	}
	if c.KVCacheDType != "" {
		d, ok := kvDTypes[strings.ToLower(c.KVCacheDType)]
		if !ok {
			return usage("--kv-cache-dtype %q: must be auto, fp32, bf16 or fp16", c.KVCacheDType)
		}
		c.KVCacheDType = d
	}
	return nil
}

// targets are the --target configurations, with their --trace-addr.
func (c *Config) targets() ([]Configuration, error) {
	var out []Configuration
	for _, t := range c.Targets {
		name, addr, ok := strings.Cut(t, "=")
		if !ok || name == "" || addr == "" {
			return nil, usage("--target %q: want NAME=HOST:PORT (a Tandem coordinator's gRPC address) or NAME=http://HOST:PORT (an OpenAI-compatible server)", t)
		}
		if err := checkName(name); err != nil {
			return nil, usage("--target %s: name %v", t, err)
		}
		cf := Configuration{Name: name, Addr: addr}
		if strings.Contains(addr, "://") {
			u, err := url.Parse(addr)
			switch {
			case err != nil:
				return nil, usage("--target %s: %v", name, err)
			case u.Scheme != "http" && u.Scheme != "https":
				return nil, usage("--target %s: URL %q must start with http:// or https://", name, addr)
			case u.Port() != "":
				if err := checkPort(u.Port()); err != nil {
					return nil, usage("--target %s: %q: %v", name, addr, err)
				}
			}
			cf.Addr, cf.URL = "", addr
		} else if err := checkHostPort(addr); err != nil {
			return nil, usage("--target %s: %q: %v", name, addr, err)
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
		if err := checkHostPort(addr); err != nil {
			return nil, usage("--trace-addr %s: %q: %v", name, addr, err)
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

// MaxLocalRanks bounds the worker processes of one local configuration
// (the sum of its groups' TP degrees): they all run on this machine.
const MaxLocalRanks = 256

// readUpFile reads a --config file into a configuration.
func readUpFile(path string, model []string, spec string) (Configuration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Configuration{}, usage("--config: %v", err)
	}
	return parseUpFile(path, data, model, spec)
}

// parseUpFile reads the --config file at path, data, into a
// configuration; every error names the file and, where one is at fault,
// the key.
func parseUpFile(path string, data []byte, model []string, spec string) (Configuration, error) {
	var f UpFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return Configuration{}, usage("--config %s: %v", path, err)
	}
	bad := func(key, format string, args ...any) error {
		return usage("--config %s: %s: "+format, append([]any{path, key}, args...)...)
	}
	if err := checkName(f.Name); err != nil {
		return Configuration{}, bad("name", "%v", err)
	}
	cf := Configuration{Name: f.Name, file: path}
	switch {
	case f.Model != "" && f.Preset != "":
		return Configuration{}, bad("model", "give model or preset, not both")
	case f.Model != "":
		cf.UpArgs, cf.Model = []string{"--model", f.Model}, f.Model
	case f.Preset != "":
		if _, err := preset.Get(f.Preset); err != nil {
			return Configuration{}, bad("preset", "%q: not one of %s", f.Preset, strings.Join(preset.Names(), ", "))
		}
		cf.UpArgs, cf.Model = []string{"--preset", f.Preset}, f.Preset
	default:
		cf.UpArgs, cf.Model = slices.Clone(model), spec
	}
	var err error
	switch f.Mode {
	case "unified":
		err = cf.pools(bad, "unified", []pool{{"groups", f.Groups, "tp", f.TP, "unified"}},
			map[string]*int{"prefill-tp": f.PrefillTP, "decode-tp": f.DecodeTP, "prefill-groups": f.PrefillGroups, "decode-groups": f.DecodeGroups})
	case "", "disaggregated":
		err = cf.pools(bad, "disaggregated", []pool{{"prefill-groups", f.PrefillGroups, "prefill-tp", f.PrefillTP, "prefill"},
			{"decode-groups", f.DecodeGroups, "decode-tp", f.DecodeTP, "decode"}}, map[string]*int{"tp": f.TP, "groups": f.Groups})
	default:
		err = bad("mode", "%q: must be unified or disaggregated", f.Mode)
	}
	if err != nil {
		return Configuration{}, err
	}
	if f.KVCacheDType != "" {
		d, ok := kvDTypes[strings.ToLower(f.KVCacheDType)]
		if !ok {
			return Configuration{}, bad("kv-cache-dtype", "%q: must be auto, fp32, bf16 or fp16", f.KVCacheDType)
		}
		cf.UpArgs = append(cf.UpArgs, "--kv-cache-dtype", d)
	}
	if f.Link != "" {
		if _, err := netshape.Lookup(f.Link); err != nil {
			return Configuration{}, bad("link", "%v", err)
		}
		cf.UpArgs = append(cf.UpArgs, "--link", f.Link)
	}
	for i, a := range f.Args {
		if a == "" {
			return Configuration{}, bad("args", "item %d is empty", i+1)
		}
		for _, own := range ownedFlags {
			if a == own || strings.HasPrefix(a, own+"=") {
				return Configuration{}, bad("args", "%s: bench compare sets it itself (free ports on loopback)", own)
			}
		}
	}
	cf.UpArgs = append(cf.UpArgs, f.Args...)
	return cf, nil
}

// ownedFlags are the tandem up flags bench/local sets on every cluster.
var ownedFlags = []string{"--grpc-addr", "--http-addr"}

// pool is one role's groups in a --config file: the keys of its count
// and of its TP degree.
type pool struct {
	nKey  string
	n     *int
	tpKey string
	tp    *int
	role  string
}

// pools checks a --config file's group keys for mode (the others,
// foreign, must be absent) and adds their flags and groups to cf.
func (cf *Configuration) pools(bad func(string, string, ...any) error, mode string, ps []pool, foreign map[string]*int) error {
	for _, k := range slices.Sorted(maps.Keys(foreign)) {
		if foreign[k] != nil {
			return bad(k, "applies to mode %s, not %s", other(mode), mode)
		}
	}
	cf.UpArgs = append(cf.UpArgs, "--mode", mode)
	ranks := 0
	for _, p := range ps {
		n, tp := 1, 2 // tandem up's defaults
		for _, kv := range []struct {
			key string
			v   *int
			dst *int
		}{{p.nKey, p.n, &n}, {p.tpKey, p.tp, &tp}} {
			if kv.v == nil {
				continue
			}
			if *kv.v < 1 {
				return bad(kv.key, "%d: must be at least 1", *kv.v)
			}
			*kv.dst = *kv.v
			cf.UpArgs = append(cf.UpArgs, "--"+kv.key, strconv.Itoa(*kv.v))
		}
		if n > MaxLocalRanks || tp > MaxLocalRanks || n*tp+ranks > MaxLocalRanks {
			return bad(p.nKey, "%d groups of TP %d: more than %d worker processes on one machine", n, tp, MaxLocalRanks)
		}
		ranks += n * tp
		for range n {
			cf.Groups = append(cf.Groups, Group{p.role, tp})
		}
	}
	return nil
}

func other(mode string) string {
	if mode == "unified" {
		return "disaggregated"
	}
	return "unified"
}

// kvDTypes are the --kv-cache-dtype values tandem up takes, by the
// name they resolve to.
var kvDTypes = map[string]string{"auto": "auto", "fp32": "fp32", "float32": "fp32", "f32": "fp32", "bf16": "bf16", "bfloat16": "bf16",
	"fp16": "fp16", "float16": "fp16", "f16": "fp16", "half": "fp16"}

// checkName refuses a configuration name that would not read well in
// request ids, file names and tables.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("missing: every configuration needs one")
	case len(name) > 64:
		return fmt.Errorf("%q: longer than 64 characters", name)
	case strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) >= 0:
		return fmt.Errorf("%q: use letters, digits, '-', '_' and '.' only", name)
	}
	return nil
}

// ints parses a comma list of positive integers (def when empty).
func ints(flag, s, def string) ([]int, error) {
	if s == "" {
		s = def
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 || v > MaxLocalRanks/2 {
			return nil, usage("%s %q: each must be an integer from 1 to %d", flag, f, MaxLocalRanks/2)
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
