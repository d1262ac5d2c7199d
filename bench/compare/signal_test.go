package compare

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemllm/tandem/bench/local/localtest"
)

// TestInterrupt sends a real SIGINT, then a real SIGTERM, to a running
// `tandem bench compare` process once its first block has finished: it
// exits with an error, leaves no process behind, and has saved the
// report of what it measured, marked partial.
func TestInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters")
	}
	exe := localtest.Binary(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(exe, "bench", "compare", "--tp", "1", "--config", "testdata/unified-tp2.yaml",
				"--num-prompts", "8", "--random-input-len", "32", "--random-output-len", "6", "--max-concurrency", "2",
				"--rounds", "3", "--seed", "1", "--result-dir", dir, "--result-filename", "r.json")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			second := make(chan struct{})
			var log strings.Builder
			go func() {
				sc := bufio.NewScanner(stderr)
				sc.Split(scanLinesOrCR)
				seen := false
				for sc.Scan() {
					log.WriteString(sc.Text() + "\n")
					// The second block begins: the first has finished.
					if !seen && strings.HasPrefix(sc.Text(), "round 1/3, half 1/2: yaml-unified-tp2") {
						seen = true
						close(second)
					}
				}
				exited <- cmd.Wait()
			}()
			select {
			case <-second:
			case err := <-exited:
				t.Fatalf("compare ended before its second block: %v\n%s", err, log.String())
			case <-time.After(3 * time.Minute):
				_ = cmd.Process.Kill()
				t.Fatalf("no second block after 3 minutes:\n%s", log.String())
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				if err == nil {
					t.Fatalf("interrupted compare exited 0:\n%s", log.String())
				}
			case <-time.After(2 * time.Minute):
				_ = cmd.Process.Kill()
				t.Fatalf("compare still running 2 minutes after %v:\n%s", sig, log.String())
			}
			if left := localtest.Leftovers(t, exe); len(left) > 0 {
				t.Fatalf("processes left after %v: %v", sig, left)
			}
			data, err := os.ReadFile(filepath.Join(dir, "r.json"))
			if err != nil {
				t.Fatalf("no partial report: %v\n%s", err, log.String())
			}
			var rep Report
			if err := json.Unmarshal(data, &rep); err != nil {
				t.Fatal(err)
			}
			if !rep.Partial || !strings.Contains(rep.StoppedBy, "interrupted") || rep.CompleteRounds != 0 ||
				len(rep.Points) != 1 || len(rep.Points[0].Configs) < 1 || rep.Points[0].Configs[0].Name != "unified-tp1" {
				t.Fatalf("report %s", data)
			}
			if !strings.Contains(log.String(), "partial report saved") {
				t.Errorf("no word of the partial report:\n%s", log.String())
			}
		})
	}
}

// scanLinesOrCR splits at newlines and carriage returns (the progress
// bar redraws its line).
func scanLinesOrCR(data []byte, atEOF bool) (int, []byte, error) {
	for i, b := range data {
		if b == '\n' || b == '\r' {
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// TestLinkNeedsRoot: run by a user that is not root, compare refuses a
// --link, its own or a --config file's, before any cluster starts.
func TestLinkNeedsRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tandem")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and setpriv to run as another user")
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // the other user reads here
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(dir, "tandem")
	bin, err := os.ReadFile(localtest.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "linked.yaml")
	for path, data := range map[string][]byte{exe: bin, conf: []byte("name: linked\nmode: unified\nlink: eth-25g\n")} {
		if err := os.WriteFile(path, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--tp", "1,2", "--link", "eth-25g"}, "--link eth-25g: "},
		{[]string{"--tp", "1", "--config", conf}, "--config " + conf},
	} {
		args := append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", exe, "bench", "compare", "--num-prompts", "2"}, tt.args...)
		cmd := exec.Command(setpriv, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tt.want) || !strings.Contains(string(out), "not running as root") || strings.Contains(string(out), "round 1/") {
			t.Errorf("%v: %v\n%s\nwant an error naming %q and root, before any round", tt.args, err, out, tt.want)
		}
	}
	if left := localtest.Leftovers(t, exe); len(left) > 0 {
		t.Fatalf("processes left: %v", left)
	}
}
