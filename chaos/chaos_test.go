package chaos

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemllm/tandem/bench/local/localtest"
	"github.com/tandemllm/tandem/model/preset"
)

// The short run is part of `make test`; `make chaos` runs the long one
// with these flags (see the Makefile).
var (
	requests = flag.Int("chaos.requests", 200, "requests of the load")
	faults   = flag.Int("chaos.faults", 8, "faults to inject")
	rate     = flag.Float64("chaos.rate", 5, "requests per second")
	report   = flag.String("chaos.report", "", "write the report as JSON to this file")
	logFile  = flag.String("chaos.log", "", "write every process's output to this file (default: shown only when the test fails)")
	seed     = flag.Uint64("chaos.seed", 0, "seed of the prompts, arrivals and fault schedule (0: a new one, printed, to replay the run with)")
)

func TestMain(m *testing.M) {
	code := m.Run()
	localtest.Cleanup()
	os.Exit(code)
}

// TestChaos runs the cluster under load through a schedule of faults and
// holds it to the suite's goals (Report.Goals: no request hung or lost,
// none failed while a healthy group of each role and the coordinator were
// there, every fault recovered from, every scheduled fault run, every KV
// block free at the end) and leaves no process behind; it names every
// goal missed, and the seed that replays the run.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster of processes under load and faults")
	}
	bin := localtest.Binary(t)
	dir, err := preset.Ensure(t.Context(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	var log io.Writer = logs
	if *logFile != "" {
		f, err := os.Create(*logFile)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		log = f
	}
	runSeed := *seed
	if runSeed == 0 {
		runSeed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay: -chaos.seed %d)", runSeed, runSeed)
	r, err := Run(t.Context(), Options{
		Binary: bin, ModelDir: dir, ModelName: "tiny", Dir: t.TempDir(),
		Requests: *requests, Faults: *faults, RequestRate: *rate, Seed: runSeed,
		Progress: testWriter{t}, Log: log,
	})
	if err != nil {
		t.Fatalf("seed %d: %v\n%s", runSeed, err, logs)
	}
	var out strings.Builder
	r.Print(&out)
	fmt.Print(out.String())
	t.Log("\n" + out.String())
	if *report != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(*report, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if left := localtest.Leftovers(t, bin); len(left) > 0 {
		t.Errorf("processes left running: %v", left)
	}
	for _, missed := range r.FailedGoals() {
		t.Errorf("goal missed (seed %d): %s", runSeed, missed)
	}
	if t.Failed() && *logFile == "" {
		t.Logf("process logs (last 64 KiB):\n%s", logs.tail(64<<10))
	}
}

// testWriter shows progress lines in the test log as they come.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// logBuffer keeps the processes' output for a failed test.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf[max(0, len(b.buf)-n):])
}

func (b *logBuffer) String() string { return b.tail(64 << 10) }
