package dynlibtest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/internal/dynlib"
)

// Tree makes a fresh root under t.TempDir holding files (paths as under
// "/"), each containing text that no dynamic loader accepts.
func Tree(t testing.TB, files ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, p := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("not a library"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// Env is a getenv that knows only m.
func Env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// Found lists the found candidates as "source path", with root cut off.
func Found(root string, cs []dynlib.Candidate) []string {
	return list(root, cs, true)
}

// Missed lists the unfound candidates the same way.
func Missed(root string, cs []dynlib.Candidate) []string {
	return list(root, cs, false)
}

func list(root string, cs []dynlib.Candidate, found bool) []string {
	var out []string
	for _, c := range cs {
		if c.Found == found {
			out = append(out, c.Source+" "+strings.TrimPrefix(c.Path, root))
		}
	}
	return out
}

// ErrorHas fails t unless err wraps target and its text holds each of
// want and none of not.
func ErrorHas(t testing.TB, err, target error, want, not []string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("err = %v, want %v", err, target)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	for _, w := range not {
		if strings.Contains(err.Error(), w) {
			t.Errorf("error has %q:\n%v", w, err)
		}
	}
}
