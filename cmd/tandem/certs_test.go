package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/pki"
)

func TestCertsCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	for _, tc := range []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{"init", []string{"certs", "init", "--out", dir, "--names", "coordinator,worker", "--hosts", "tandem.example"}, "worker.crt", ""},
		{"init again", []string{"certs", "init", "--out", dir}, "", "file exists"},
		{"issue", []string{"certs", "issue", "--dir", dir, "etcd"}, "etcd.crt", ""},
		{"issue over a name", []string{"certs", "issue", "--dir", dir, "worker"}, "", "file exists"},
		{"issue without a CA", []string{"certs", "issue", "--dir", t.TempDir(), "x"}, "", "ca.crt"},
		{"no out", []string{"certs", "init"}, "", "--out is required"},
		{"bad days", []string{"certs", "init", "--out", t.TempDir(), "--days", "0"}, "", "--days 0"},
		{"bad name", []string{"certs", "init", "--out", t.TempDir(), "--names", "../x"}, "", "--names"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runTandem(t, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out, tc.want) {
				t.Fatalf("out %q, err %v; want %q in it", out, err, tc.want)
			}
		})
	}
	// Every certificate written loads as a cluster member's identity.
	for _, n := range []string{"coordinator", "worker", "etcd"} {
		if _, err := pki.Load(pki.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, n+".crt"), Key: filepath.Join(dir, n+".key")}, pki.Options{}); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}
