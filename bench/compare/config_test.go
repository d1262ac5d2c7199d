package compare

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigFileErrors: every mistake in a --config file is an error
// naming the file and the key at fault, never a panic.
func TestConfigFileErrors(t *testing.T) {
	for _, tt := range []struct {
		name, yaml, key string
	}{
		{"negative groups", "name: a\nmode: unified\ngroups: -1\n", "groups"},
		{"zero groups", "name: a\nmode: unified\ngroups: 0\n", "groups"},
		{"negative tp", "name: a\nmode: unified\ntp: -3\n", "tp"},
		{"negative prefill-tp", "name: a\nprefill-tp: -3\n", "prefill-tp"},
		{"zero decode-groups", "name: a\nmode: disaggregated\ndecode-groups: 0\n", "decode-groups"},
		{"tp of the other mode", "name: a\nmode: disaggregated\ntp: 2\n", "tp"},
		{"decode-tp of the other mode", "name: a\nmode: unified\ndecode-tp: 2\n", "decode-tp"},
		{"too many processes", "name: a\nmode: unified\ngroups: 1000000000\ntp: 2\n", "groups"},
		{"too many processes, overflow", "name: a\nprefill-groups: 200\nprefill-tp: 200\n", "prefill-groups"},
		{"no name", "mode: unified\n", "name"},
		{"bad name", "name: a b\nmode: unified\n", "name"},
		{"bad mode", "name: a\nmode: colocated\n", "mode"},
		{"unknown preset", "name: a\npreset: gpt-5\n", "preset"},
		{"model and preset", "name: a\npreset: tiny\nmodel: /m\n", "model"},
		{"bad KV cache dtype", "name: a\nkv-cache-dtype: fp8\n", "kv-cache-dtype"},
		{"unknown link", "name: a\nlink: eth-1t\n", "link"},
		{"port set in args", "name: a\nargs: [\"--grpc-addr\", \"127.0.0.1:9\"]\n", "args"},
		{"empty arg", "name: a\nargs: [\"\"]\n", "args"},
		{"unknown key", "name: a\ntensor-parallel: 2\n", "tensor-parallel"},
		{"wrong type", "name: a\ntp: two\n", "tp"},
		{"not a mapping", "- a\n- b\n", "compare.UpFile"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cluster.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c := Config{TPs: "2", ConfigFiles: []string{path}}
			_, err := c.Configurations()
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("error %v, want one naming %s and %q", err, path, tt.key)
			}
		})
	}
}

// TestConfigFile: a good file gives tandem up's flags and the groups.
func TestConfigFile(t *testing.T) {
	for _, tt := range []struct {
		yaml, args string
		groups     []Group
	}{
		{"name: a\nmode: unified\n", "--preset tiny --mode unified", []Group{{"unified", 2}}},
		{"name: a\nmode: unified\ntp: 4\ngroups: 2\nkv-cache-dtype: bf16\n", "--preset tiny --mode unified --groups 2 --tp 4 --kv-cache-dtype bf16",
			[]Group{{"unified", 4}, {"unified", 4}}},
		{"name: a\npreset: llama-160m\nprefill-tp: 8\ndecode-groups: 2\nlink: eth-25g\nargs: [--threads, \"1\"]\n",
			"--preset llama-160m --mode disaggregated --prefill-tp 8 --decode-groups 2 --link eth-25g --threads 1",
			[]Group{{"prefill", 8}, {"decode", 2}, {"decode", 2}}},
	} {
		cf, err := parseUpFile("f.yaml", []byte(tt.yaml), []string{"--preset", "tiny"}, "tiny")
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if got := strings.Join(cf.UpArgs, " "); got != tt.args || len(cf.Groups) != len(tt.groups) {
			t.Fatalf("%q: tandem up %s, groups %v; want %s, %v", tt.yaml, got, cf.Groups, tt.args, tt.groups)
		}
		for i, g := range tt.groups {
			if cf.Groups[i] != g {
				t.Fatalf("%q: groups %v, want %v", tt.yaml, cf.Groups, tt.groups)
			}
		}
	}
}

// FuzzParseUpFile: any file gives a configuration that can start (a
// name, tandem up flags, groups of TP 1 or more, within MaxLocalRanks
// processes) or an error naming the file; never a panic.
func FuzzParseUpFile(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("name: a\nmode: unified\ngroups: -1\n"))
	f.Add([]byte("name: a\nprefill-tp: 3\ndecode-groups: 9\nargs: [--threads, \"1\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cf, err := parseUpFile("fuzz.yaml", data, []string{"--preset", "tiny"}, "tiny")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("error %v does not name the file", err)
			}
			return
		}
		ranks := 0
		for _, g := range cf.Groups {
			if g.TP < 1 {
				t.Fatalf("group %v", g)
			}
			ranks += g.TP
		}
		if checkName(cf.Name) != nil || len(cf.UpArgs) == 0 || len(cf.Groups) == 0 || ranks > MaxLocalRanks {
			t.Fatalf("configuration %+v from %q", cf, data)
		}
	})
}
