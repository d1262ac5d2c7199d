package serve

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/target/openai"
)

// Backends are the --backend names taken, as vllm bench serve names
// them, and the endpoint each speaks; "tandem" is the gRPC target of
// --addr.
var backends = map[string]string{
	"openai":      openai.Completions,
	"vllm":        openai.Completions,
	"openai-chat": openai.ChatCompletions,
	"tandem":      "",
}

// backendNames lists the --backend values for messages.
func backendNames() string {
	names := make([]string, 0, len(backends))
	for n := range backends {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// checked is what the Config's flags say beyond the workload: the
// backend and endpoint, the request headers and the sampling parameters.
type checked struct {
	backend, endpoint string
	headers           [][2]string
	sampling          bench.Sampling
}

// check checks the flags that are not the workload's and returns them
// with the --metadata pairs; settings are the plan's, whose result keys
// no --metadata key may take.
func (c *Config) check(settings bench.Settings) (*checked, [][2]string, error) {
	var k checked
	var err error
	if k.backend, k.endpoint, err = c.resolveBackend(); err != nil {
		return nil, nil, err
	}
	if k.headers, err = ParsePairs("--header", c.Headers); err != nil {
		return nil, nil, err
	}
	for _, h := range k.headers {
		if err := checkHeader(h[0], h[1], c.Addr != ""); err != nil {
			return nil, nil, usage("--header %s=%s: %v", h[0], h[1], err)
		}
	}
	meta, err := ParsePairs("--metadata", c.Metadata)
	if err != nil {
		return nil, nil, err
	}
	reserved := bench.ResultKeys(settings)
	for _, kv := range meta {
		if slices.Contains(reserved, kv[0]) {
			return nil, nil, usage("--metadata %s=%s: %s is a key of the result itself; pick another name", kv[0], kv[1], kv[0])
		}
	}
	if k.sampling, err = c.checkSampling(); err != nil {
		return nil, nil, err
	}
	if c.RequestIDPrefix != "" && !printable(c.RequestIDPrefix) {
		return nil, nil, usage("--request-id-prefix %q: printable ASCII only (it goes in headers and traces)", c.RequestIDPrefix)
	}
	return &k, meta, nil
}

// resolveBackend is the backend named in results and the endpoint a
// --base-url target speaks: --backend maps to its endpoint (openai and
// vllm: /v1/completions; openai-chat: /v1/chat/completions), --endpoint
// alone names the backend, and the two must agree.
func (c *Config) resolveBackend() (string, string, error) {
	if strings.Contains(c.Addr, "://") {
		return "", "", usage("--addr %s: a coordinator's gRPC HOST:PORT; an http(s) URL goes in --base-url", c.Addr)
	}
	if c.Addr != "" {
		if c.Endpoint != "" && c.Endpoint != openai.Completions {
			return "", "", usage("--endpoint %s: applies to --base-url only", c.Endpoint)
		}
		if c.Backend != "" && c.Backend != "tandem" {
			return "", "", usage("--backend %s: applies to --base-url; an --addr target is a Tandem coordinator (backend tandem)", c.Backend)
		}
		return "tandem", "", nil
	}
	if c.Backend == "" {
		if c.Endpoint == openai.ChatCompletions {
			return "openai-chat", c.Endpoint, nil
		}
		return "openai", c.Endpoint, nil
	}
	ep, ok := backends[c.Backend]
	switch {
	case !ok:
		return "", "", usage("--backend %q: must be one of %s", c.Backend, backendNames())
	case ep == "":
		return "", "", usage("--backend %s: needs --addr HOST:PORT (a Tandem coordinator's gRPC address), not --base-url", c.Backend)
	case c.Endpoint != "" && c.Endpoint != ep:
		return "", "", usage("--backend %s speaks %s, not --endpoint %s (the chat API is --backend openai-chat)", c.Backend, ep, c.Endpoint)
	}
	return c.Backend, ep, nil
}

// checkSampling checks --temperature, --top-p and --top-k as the
// servers bound them.
func (c *Config) checkSampling() (bench.Sampling, error) {
	s := bench.Sampling{Temperature: c.Temperature, TopP: c.TopP, TopK: c.TopK}
	switch {
	case s.Temperature != nil && !(*s.Temperature >= 0 && !math.IsInf(*s.Temperature, 0)):
		return s, usage("--temperature %v: must be a number >= 0 (0: greedy)", *s.Temperature)
	case s.TopP != nil && !(*s.TopP > 0 && *s.TopP <= 1):
		return s, usage("--top-p %v: must be in (0, 1]", *s.TopP)
	case s.TopK != nil && *s.TopK < -1:
		return s, usage("--top-k %d: must be -1 (all) or >= 0", *s.TopK)
	}
	return s, nil
}

// ParsePairs reads KEY=VALUE arguments, as vllm bench serve's --metadata
// and --header take them: the key and value trimmed of spaces, the value
// everything after the first "="; a key must not be empty nor given
// twice. flag names the flag in errors.
func ParsePairs(flag string, args []string) ([][2]string, error) {
	var out [][2]string
	seen := map[string]bool{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok:
			return nil, usage("%s %q: want KEY=VALUE", flag, a)
		case k == "":
			return nil, usage("%s %q: the key is empty", flag, a)
		case seen[k]:
			return nil, usage("%s %q: %s given twice", flag, a, k)
		}
		seen[k] = true
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// checkHeader checks a --header: an HTTP field name (a token) and a value
// without control characters; for a gRPC target the name becomes
// metadata, lower case, and must not be one gRPC reserves.
func checkHeader(name, value string, grpc bool) error {
	for _, r := range name {
		if r > '~' || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return fmt.Errorf("%q is not a header name", name)
		}
	}
	for _, r := range value {
		if (r < ' ' && r != '\t') || r == 0x7f {
			return fmt.Errorf("the value holds a control character")
		}
	}
	if !grpc {
		return nil
	}
	lower := strings.ToLower(name)
	if strings.Trim(lower, "0123456789abcdefghijklmnopqrstuvwxyz-_.") != "" {
		return fmt.Errorf("%q is not a gRPC metadata key (letters, digits, - _ . only)", name)
	}
	if strings.HasPrefix(lower, "grpc-") || strings.HasSuffix(lower, "-bin") ||
		slices.Contains([]string{"content-type", "te", "user-agent", "authorization"}, lower) {
		return fmt.Errorf("gRPC reserves %s (give an API key with --api-key)", lower)
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if r < ' ' || r > '~' {
			return false
		}
	}
	return true
}
