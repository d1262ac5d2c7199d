package cpuquota

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestLimit reads the cgroup files of testdata/<case> as a process would
// read /proc/self and /sys/fs/cgroup, and turns the limit into CPUs on
// an 8-CPU machine.
func TestLimit(t *testing.T) {
	for _, tc := range []struct {
		dir   string
		limit float64
		cpus  int
		err   bool
	}{
		{dir: "v2-namespaced", limit: 2.5, cpus: 3},
		{dir: "v2-parent-stricter", limit: 1.5, cpus: 2},
		{dir: "v2-unlimited", limit: 0, cpus: 8},
		{dir: "v1-docker", limit: 0.5, cpus: 1},
		{dir: "hybrid-unlimited", limit: 0, cpus: 8},
		{dir: "v2-malformed", err: true},
		{dir: "missing", err: true},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			limit, err := Limit(os.DirFS(filepath.Join("testdata", tc.dir)))
			if (err != nil) != tc.err {
				t.Fatalf("Limit: %v; want an error: %v", err, tc.err)
			}
			if err != nil {
				t.Logf("refused: %v", err)
				return
			}
			if limit != tc.limit {
				t.Errorf("limit %g CPUs; want %g", limit, tc.limit)
			}
			if got := cpus(8, limit); got != tc.cpus {
				t.Errorf("%d CPUs of 8 under limit %g; want %d", got, limit, tc.cpus)
			}
		})
	}
}

// This process's own cgroup: whatever it says, CPUs stays within 1 and
// the CPUs the process may run on.
func TestCPUsOfThisProcess(t *testing.T) {
	limit, err := Limit(os.DirFS("/"))
	n := CPUs()
	t.Logf("cgroup CPU limit %g (%v): %d of %d CPUs", limit, err, n, runtime.NumCPU())
	if n < 1 || n > runtime.NumCPU() {
		t.Fatalf("CPUs() = %d; want 1..%d", n, runtime.NumCPU())
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/end\04`: `/end\04`} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q; want %q", in, got, want)
		}
	}
}
