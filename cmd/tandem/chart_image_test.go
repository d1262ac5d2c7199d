package main

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const dockerfile = "../../deploy/container/Dockerfile"

// stage is one FROM of the Dockerfile: its base, name and instructions.
type stage struct {
	base, name string
	lines      []string
}

func readDockerfile(t *testing.T) (args map[string]string, stages []stage) {
	t.Helper()
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	args = map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		word, rest, _ := strings.Cut(line, " ")
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case word == "ARG" && len(stages) == 0:
			k, v, _ := strings.Cut(rest, "=")
			args[k] = v
		case word == "FROM":
			f := strings.Fields(rest)
			st := stage{base: os.Expand(f[0], func(k string) string { return args[k] })}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
		case len(stages) > 0:
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return args, stages
}

// TestChartImageRunsTheBinary holds deploy/container/Dockerfile to what
// the chart runs: the cpu and cuda targets (make image, image and
// gpuImage) start ./cmd/tandem as their entrypoint, as the user of the
// chart's security context, built with the Go of go.mod; and the binary,
// built as the Dockerfile builds it, finds the dynamic loader it asks for
// in the cpu base (purego links it against glibc even without cgo).
func TestChartImageRunsTheBinary(t *testing.T) {
	args, stages := readDockerfile(t)
	byName := map[string]stage{}
	for _, st := range stages {
		byName[st.name] = st
	}
	build, ok := byName["build"]
	if !ok {
		t.Fatalf("no build stage in %s", dockerfile)
	}
	builds := regexp.MustCompile(`CGO_ENABLED=0 go build .*-o (\S+) \./cmd/tandem$`)
	var out string
	for _, l := range build.lines {
		if m := builds.FindStringSubmatch(strings.TrimPrefix(l, "RUN ")); m != nil {
			out = m[1]
		}
	}
	if out == "" {
		t.Fatalf("the build stage does not build ./cmd/tandem without cgo: %v", build.lines)
	}
	goMod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	if goVersion == nil || !strings.Contains(build.base, "golang:"+string(goVersion[1])) {
		t.Errorf("build stage on %s; go.mod wants Go %s", build.base, goVersion[1])
	}

	user := regexp.MustCompile(`^USER (\d+):(\d+)$`)
	r := renderChart(t, "")
	sc := r.values["podSecurityContext"].(map[string]any)
	for _, target := range []string{"cpu", "cuda"} {
		st, ok := byName[target]
		if !ok {
			t.Errorf("no %s target (make image builds it; the chart's %s runs it)", target, map[string]string{"cpu": "image", "cuda": "gpuImage"}[target])
			continue
		}
		var entry, uid, gid string
		for _, l := range st.lines {
			if m := user.FindStringSubmatch(l); m != nil {
				uid, gid = m[1], m[2]
			}
			if e, ok := strings.CutPrefix(l, "ENTRYPOINT "); ok {
				entry = e
			}
			if c, ok := strings.CutPrefix(l, "COPY --from=build "); ok && strings.Fields(c)[0] != out {
				t.Errorf("%s copies %s; the build stage writes %s", target, c, out)
			}
		}
		if entry != `["/usr/local/bin/tandem"]` || !slices.Contains(st.lines, "COPY --from=build "+out+" /usr/local/bin/tandem") {
			t.Errorf("%s: entrypoint %s; want the built tandem at /usr/local/bin/tandem (the chart gives only args)", target, entry)
		}
		if uid != "65532" || uid != fmt.Sprint(sc["runAsUser"]) || gid != fmt.Sprint(sc["runAsGroup"]) {
			t.Errorf("%s runs as %s:%s; the chart's podSecurityContext as %v:%v", target, uid, gid, sc["runAsUser"], sc["runAsGroup"])
		}
	}

	if testing.Short() {
		return
	}
	bin := filepath.Join(t.TempDir(), "tandem")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, b)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			base := byName["cpu"].base
			t.Logf("the binary asks for a dynamic loader; cpu base %s (default %s)", base, args["CPU_BASE"])
			if strings.Contains(base, "distroless/static") || base == "scratch" {
				t.Errorf("cpu base %s has no glibc, which the binary (dynamically linked by purego) needs to start", base)
			}
		}
	}
}
