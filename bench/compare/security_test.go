package compare

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/bench/local"
	"github.com/tandemllm/tandem/pki"
)

// TestSecuredAgainstPlain compares a cluster with every security
// measure on (API keys, TLS on its public listeners, mutual TLS inside:
// tandem up's default) against the same cluster with none, as the cost
// of security is measured (docs/security.md): both sides serve and trace
// every request, the secured one over TLS checked against --ca-cert and
// with the key.
func TestSecuredAgainstPlain(t *testing.T) {
	c := smallConfig(t)
	dir := t.TempDir()
	if _, err := pki.Init(dir, []string{"server"}, nil, 0); err != nil {
		t.Fatal(err)
	}
	const key = "compare-key-41c9"
	configs := map[string]string{
		"plain":   `["--internal-tls=false"]`,
		"secured": fmt.Sprintf(`["--api-key", %q, "--tls-cert", %q, "--tls-key", %q]`, key, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")),
	}
	for _, name := range []string{"plain", "secured"} {
		f := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(f, []byte("name: "+name+"\npreset: tiny\nmode: unified\ntp: 1\nargs: "+configs[name]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c.ConfigFiles = append(c.ConfigFiles, f)
	}
	c.APIKey, c.CACert = key, filepath.Join(dir, pki.CACertFile)
	var out, errs bytes.Buffer
	rep, err := Run(t.Context(), c, &out, &errs)
	if err != nil {
		t.Fatalf("%v\n%s", err, errs.String())
	}
	for _, cp := range rep.Points[0].Configs {
		if cp.Cost.Traced != c.NumPrompts {
			t.Errorf("%s: %d of %d requests served and traced\n%s", cp.Name, cp.Cost.Traced, c.NumPrompts, out.String())
		}
	}
	if !strings.Contains(out.String(), "secured") {
		t.Fatalf("table:\n%s", out.String())
	}

	// The secured cluster served TLS: started alone, it is not ready to
	// a client without the CA, and is (over TLS) to one with it.
	args := []string{"--preset", "tiny", "--mode", "unified", "--tp", "1", "--threads", "1", "--api-key", key,
		"--tls-cert", filepath.Join(dir, "server.crt"), "--tls-key", filepath.Join(dir, "server.key")}
	if _, err := local.Start(t.Context(), local.Options{Executable: c.Executable, Args: args}); err == nil || !strings.Contains(err.Error(), "serves TLS") {
		t.Fatalf("a TLS cluster started without a CA: %v", err)
	}
	tlsCfg, err := pki.ClientRoots(c.CACert, "")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := local.Start(t.Context(), local.Options{Executable: c.Executable, Args: args, ClientTLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	if !cl.TLS {
		t.Fatalf("a cluster given --tls-cert serves plain text")
	}
}
