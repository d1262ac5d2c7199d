package apikey

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSet(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	if err := os.WriteFile(file, []byte("# the team's keys\nfile-key-1\n\n  file-key-2  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New([]string{"flag-key"}, file)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"flag-key", true}, {"file-key-1", true}, {"file-key-2", true},
		{"", false}, {"flag-ke", false}, {"flag-key ", false}, {"# the team's keys", false}, {"FLAG-KEY", false},
	} {
		if got := s.Valid(tc.key); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}

	// The file edited: its old keys go, new ones come, the flag's stay.
	if err := os.WriteFile(file, []byte("file-key-3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.Valid("file-key-3") {
		t.Fatal("a key was taken before Reload")
	}
	if n, err := s.Reload(); err != nil || n != 2 {
		t.Fatalf("Reload: %d keys, %v; want 2", n, err)
	}
	if !s.Valid("file-key-3") || s.Valid("file-key-1") || !s.Valid("flag-key") {
		t.Fatal("Reload did not replace the file's keys")
	}

	// A file that no longer reads keeps the keys as they were.
	if err := os.WriteFile(file, []byte("two words\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reload(); err == nil || !strings.Contains(err.Error(), "line 1") || strings.Contains(err.Error(), "two words") {
		t.Fatalf("Reload of a bad file: %v; want an error naming the line, not the key", err)
	}
	os.Remove(file)
	if _, err := s.Reload(); err == nil {
		t.Fatal("Reload of a missing file succeeded")
	}
	if !s.Valid("file-key-3") {
		t.Fatal("a failed Reload dropped the keys")
	}
}

func TestNew(t *testing.T) {
	s, err := New(nil, "")
	if s != nil || err != nil {
		t.Fatalf("New with nothing: %v, %v; want nil, nil (no authentication)", s, err)
	}
	if s.Valid("anything") {
		t.Fatal("a nil set accepts a key")
	}
	if _, err := New([]string{"ok", " "}, ""); err == nil {
		t.Fatal("an empty key was accepted")
	}
	if _, err := New(nil, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing keys file was accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	s, err = New(nil, empty)
	if err != nil || s == nil || s.Valid("") || s.Valid("x") {
		t.Fatalf("an empty keys file: %v, %v; want a set accepting nothing", s, err)
	}
}

func TestBearer(t *testing.T) {
	for _, tc := range []struct {
		in, key string
		ok      bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"  Bearer   abc  ", "abc", true},
		{"Basic abc", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"abc", "", false},
		{"", "", false},
	} {
		key, ok := Bearer(tc.in)
		if key != tc.key || ok != tc.ok {
			t.Errorf("Bearer(%q) = %q, %v; want %q, %v", tc.in, key, ok, tc.key, tc.ok)
		}
	}
}

// FuzzBearer: any Authorization value parses without a panic, and a
// credential it returns is non-empty, has no surrounding space, and is in
// the input.
func FuzzBearer(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  x ", "Basic abc", "", "Bearer \x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		key, ok := Bearer(in)
		if ok != (key != "") || key != strings.TrimSpace(key) || !strings.Contains(in, key) {
			t.Fatalf("Bearer(%q) = %q, %v", in, key, ok)
		}
	})
}
