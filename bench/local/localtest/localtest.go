package localtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemllm/tandem/internal/scratch"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

var (
	once     sync.Once
	binDir   *scratch.Dir // removed by Cleanup, or by a later test process if this one is killed
	binary   string
	buildErr string
)

// Binary returns the path of a tandem binary built from this checkout
// (once per test process, into a directory removed by Cleanup).
func Binary(tb testing.TB) string {
	tb.Helper()
	once.Do(func() {
		dir, err := scratch.New("tandem-bench-bin-", scratch.Options{})
		if err != nil {
			buildErr = err.Error()
			return
		}
		binDir = dir
		binary = filepath.Join(dir.Path(), "tandem")
		gobin, err := exec.LookPath("go")
		if err != nil {
			buildErr = "the go command is needed to build tandem: " + err.Error()
			return
		}
		out, err := exec.Command(gobin, "build", "-o", binary, "github.com/tandemllm/tandem/cmd/tandem").CombinedOutput()
		if err != nil {
			buildErr = err.Error() + "\n" + string(out)
		}
	})
	if buildErr != "" {
		tb.Fatalf("building tandem: %s", buildErr)
	}
	return binary
}

// Cleanup removes the built binary; call it from TestMain after m.Run.
func Cleanup() {
	if binDir != nil {
		binDir.Close()
	}
}

// Leftovers lists the living processes running exe (Linux /proc), as
// "PID CMDLINE". Tests check it is empty after stopping their clusters.
func Leftovers(tb testing.TB, exe string) []string {
	tb.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		tb.Skip("no /proc to look for processes in")
	}
	var out []string
	for _, e := range entries {
		path, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || strings.TrimSuffix(path, " (deleted)") != exe {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && strings.HasPrefix(strings.TrimSpace(string(stat[i+1:])), "Z") {
			continue // a zombie has exited
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out = append(out, e.Name()+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
	}
	return out
}

// Requests is the number of requests the coordinator at addr remembers
// (at most 1000): tests check that bad input sent none.
func Requests(tb testing.TB, addr string) int {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	resp, err := tandemv1.NewTracesClient(conn).ListRequests(tb.Context(), &tandemv1.ListRequestsRequest{Limit: 1000})
	if err != nil {
		tb.Fatal(err)
	}
	return len(resp.GetRequests())
}
