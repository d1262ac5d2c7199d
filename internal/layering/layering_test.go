package layering

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const (
	module = "github.com/tandemllm/tandem"
	doc    = "docs/architecture.md"
)

// rule is one row of the package table: the packages it describes and
// what they may import of the module.
type rule struct {
	line     int
	packages []string
	imports  []string // exact packages, or "dir/..." for dir and everything under it
	any      bool     // "everything below"
}

// aliases are the short names the table uses for packages.
var aliases = map[string]string{"proto": "proto/tandem/v1"}

var code = regexp.MustCompile("`([^`]+)`")

// parseTable reads the rows of the table under "## Packages". The third
// column is "none", "everything below", or backquoted package paths, where
// a path followed by "(tests only)" is not an import of the package itself.
func parseTable(r io.Reader) ([]rule, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var rules []rule
	in := false
	for i, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Packages"
			continue
		case !in || !strings.HasPrefix(line, "| `"):
			continue
		}
		cells := strings.Split(strings.ReplaceAll(line, `\|`, "¦"), "|")
		if len(cells) != 5 {
			return nil, fmt.Errorf("%s:%d: %d columns, want 3", doc, i+1, len(cells)-2)
		}
		ru := rule{line: i + 1}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			ru.packages = append(ru.packages, resolve(m[1]))
		}
		imports := strings.TrimSpace(cells[3])
		switch imports {
		case "none":
		case "everything below":
			ru.any = true
		default:
			for _, part := range strings.Split(imports, ",") {
				m := code.FindStringSubmatch(part)
				if m == nil {
					return nil, fmt.Errorf("%s:%d: import %q is not a `package`", doc, i+1, strings.TrimSpace(part))
				}
				if !strings.Contains(part, "(tests only)") {
					ru.imports = append(ru.imports, resolve(m[1]))
				}
			}
		}
		rules = append(rules, ru)
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("%s: no package table under ## Packages", doc)
	}
	return rules, nil
}

func resolve(name string) string {
	if full, ok := aliases[name]; ok {
		return full
	}
	return name
}

func (r rule) allows(imp string) bool {
	if r.any {
		return true
	}
	for _, a := range r.imports {
		dir, tree := strings.CutSuffix(a, "/...")
		if a == imp || tree && (imp == dir || strings.HasPrefix(imp, dir+"/")) {
			return true
		}
	}
	return false
}

// check compares the module's packages (path → imports of the module,
// both relative to the module) with the table's rules.
func check(rules []rule, pkgs map[string][]string) []error {
	var errs []error
	byPkg := map[string]rule{}
	for _, r := range rules {
		for _, p := range r.packages {
			if _, ok := pkgs[p]; !ok {
				errs = append(errs, fmt.Errorf("%s:%d: package %s does not exist; remove or rename its row", doc, r.line, p))
			}
			byPkg[p] = r
		}
	}
	for _, p := range slices.Sorted(maps.Keys(pkgs)) {
		r, ok := byPkg[p]
		if !ok {
			errs = append(errs, fmt.Errorf("package %s is not in %s's package table: add a row saying what it provides and imports", p, doc))
			continue
		}
		for _, imp := range pkgs[p] {
			if !r.allows(imp) {
				errs = append(errs, fmt.Errorf("%s imports %s, which its row (%s:%d) does not allow: change the import or, if the layering should change, the row", p, imp, doc, r.line))
			}
		}
	}
	return errs
}

// listPackages runs `go list` on the module: every package's imports of
// the module, tests' imports left out.
func listPackages(root string) (map[string][]string, error) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w\n%s", err, stderr.String())
	}
	pkgs := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		rel, ok := strings.CutPrefix(p.ImportPath, module+"/")
		if !ok {
			continue
		}
		var own []string
		for _, imp := range p.Imports {
			if r, ok := strings.CutPrefix(imp, module+"/"); ok {
				own = append(own, r)
			}
		}
		pkgs[rel] = own
	}
	return pkgs, nil
}

// TestImportsFollowArchitecture is the check itself, on this module.
func TestImportsFollowArchitecture(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, doc))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rules, err := parseTable(f)
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := listPackages(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range check(rules, pkgs) {
		t.Error(err)
	}
}

// The checker itself: what it must catch and what it must let pass.
func TestCheck(t *testing.T) {
	const table = "# x\n\n## Packages\n\n" +
		"| package | provides | imports (Tandem) |\n| --- | --- | --- |\n" +
		"| `cmd/x` | the binary | everything below |\n" +
		"| `coordinator` | routing | `cluster`, `proto`, `model` (tests only) |\n" +
		"| `cluster`, `metrics` | etcd \\| metrics | none |\n" +
		"| `bench/serve` | flags | `bench/...` |\n" +
		"| `bench/stats` | numbers | none |\n\n## Next\n\n| `ignored` | x | none |\n"
	rules, err := parseTable(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	base := func() map[string][]string {
		return map[string][]string{
			"cmd/x":       {"coordinator", "cluster", "bench/serve"},
			"coordinator": {"cluster", "proto/tandem/v1"},
			"cluster":     nil,
			"metrics":     nil,
			"bench/serve": {"bench/stats"},
			"bench/stats": nil,
		}
	}
	for _, tc := range []struct {
		name string
		edit func(map[string][]string)
		want []string // substrings, one per error
	}{
		{"clean", func(map[string][]string) {}, nil},
		{"upward import", func(p map[string][]string) { p["cluster"] = []string{"coordinator"} }, []string{"cluster imports coordinator"}},
		{"test-only import used", func(p map[string][]string) { p["coordinator"] = append(p["coordinator"], "model") }, []string{"coordinator imports model"}},
		{"outside the subtree", func(p map[string][]string) { p["bench/serve"] = []string{"cluster"} }, []string{"bench/serve imports cluster"}},
		{"the subtree's root is in it", func(p map[string][]string) { p["bench/serve"] = []string{"bench"} }, nil},
		{"package not in the table", func(p map[string][]string) { p["worker"] = nil }, []string{"package worker is not in"}},
		{"row of a removed package", func(p map[string][]string) { delete(p, "metrics") }, []string{"package metrics does not exist"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkgs := base()
			tc.edit(pkgs)
			errs := check(rules, pkgs)
			if len(errs) != len(tc.want) {
				t.Fatalf("errors %v, want %d", errs, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %q, want it to say %q", errs[i], w)
				}
			}
		})
	}
	if _, err := parseTable(strings.NewReader("## Packages\n\n| `a` | b | cluster |\n")); err == nil {
		t.Error("an import without backquotes was accepted")
	}
}
