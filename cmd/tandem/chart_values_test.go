package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/model/preset"
)

// checkPrefix: every tandem process of a release roots its etcd keys
// under the release's prefix (the values', or /NAMESPACE/RELEASE).
func checkPrefix(t *testing.T, r *renderedChart, owner string, cmd *cobra.Command) {
	t.Helper()
	want, _ := r.values["etcd"].(map[string]any)["prefix"].(string)
	if want == "" {
		want = "/" + chartNamespace + "/" + r.release
	}
	got := flag(t, cmd, "etcd-prefix")
	if got != want {
		t.Errorf("%s: --etcd-prefix %q; want %q", owner, got, want)
	}
	if err := cluster.CheckPrefix(got); err != nil {
		t.Errorf("%s: %v", owner, err)
	}
}

// checkCoordinatorValues: the coordinator's admission and migration
// flags are the values'.
func checkCoordinatorValues(t *testing.T, r *renderedChart, owner string, cmd *cobra.Command) {
	t.Helper()
	checkPrefix(t, r, owner, cmd)
	v := r.values["coordinator"].(map[string]any)
	want, err := time.ParseDuration(v["queueTimeout"].(string))
	if err != nil {
		t.Fatalf("coordinator.queueTimeout: %v", err)
	}
	if got, _ := cmd.Flags().GetDuration("queue-timeout"); got != want {
		t.Errorf("%s: --queue-timeout %v; values say %v", owner, got, want)
	}
	for name, key := range map[string]string{"migration-limit": "migrationLimit", "max-in-flight": "maxInFlight"} {
		if got := flag(t, cmd, name); got != fmt.Sprint(v[key]) {
			t.Errorf("%s: --%s %s; values say %v", owner, name, got, v[key])
		}
	}
}

// checkWorkerValues: a worker's KV cache flags are its role's values,
// and its pod has the /dev/shm they ask for.
func checkWorkerValues(t *testing.T, r *renderedChart, p pod, owner string, cmd *cobra.Command) {
	t.Helper()
	checkPrefix(t, r, owner, cmd)
	v := r.values[p.role].(map[string]any)
	if got := flag(t, cmd, "kv-cache-dtype"); got != v["kvCacheDtype"] {
		t.Errorf("%s: --kv-cache-dtype %s; %s.kvCacheDtype %v", owner, got, p.role, v["kvCacheDtype"])
	}
	if got := flag(t, cmd, "no-prefix-caching"); got != fmt.Sprint(v["enablePrefixCaching"] != true) {
		t.Errorf("%s: --no-prefix-caching %s; %s.enablePrefixCaching %v", owner, got, p.role, v["enablePrefixCaching"])
	}
	want := v["shmSize"].(string)
	if want == "" && v["device"] == "cuda" {
		want = "8Gi"
	}
	got := ""
	for _, vol := range p.template.Spec.Volumes {
		if vol.EmptyDir == nil || vol.EmptyDir.Medium != corev1.StorageMediumMemory {
			continue
		}
		for _, m := range p.template.Spec.Containers[0].VolumeMounts {
			if m.Name == vol.Name && m.MountPath == "/dev/shm" && vol.EmptyDir.SizeLimit != nil {
				got = vol.EmptyDir.SizeLimit.String()
			}
		}
	}
	if got != want {
		t.Errorf("%s: /dev/shm %q; %s.shmSize %q on %v", owner, got, p.role, v["shmSize"], v["device"])
	}
}

// checkStorage: every emptyDir has a sizeLimit; the containers request
// the ephemeral storage the disk-backed ones may fill (the app containers
// together, each init container alone); a preset's model directory fits
// the volume its init container writes it to.
func checkStorage(t *testing.T, r *renderedChart, p pod) {
	t.Helper()
	spec := &p.template.Spec
	var disk resource.Quantity
	limits := map[string]resource.Quantity{}
	for _, v := range spec.Volumes {
		if v.EmptyDir == nil {
			continue
		}
		if v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.IsZero() {
			t.Errorf("%s: emptyDir %s has no sizeLimit", p.owner, v.Name)
			continue
		}
		limits[v.Name] = *v.EmptyDir.SizeLimit
		if v.EmptyDir.Medium != corev1.StorageMediumMemory {
			disk.Add(*v.EmptyDir.SizeLimit)
		}
	}
	var apps resource.Quantity
	for _, c := range spec.Containers {
		apps.Add(c.Resources.Requests[corev1.ResourceEphemeralStorage])
	}
	if apps.Cmp(disk) < 0 {
		t.Errorf("%s: the containers request %s of ephemeral storage; its emptyDirs may hold %s", p.owner, apps.String(), disk.String())
	}
	for _, c := range spec.InitContainers {
		if req := c.Resources.Requests[corev1.ResourceEphemeralStorage]; req.Cmp(disk) < 0 {
			t.Errorf("%s: init container %s requests %s of ephemeral storage; the emptyDirs may hold %s", p.owner, c.Name, req.String(), disk.String())
		}
		cmd := command(t, p.owner+"/"+c.Name, c.Args)
		if cmd.CommandPath() != "tandem model init" {
			continue
		}
		size := presetSize(t, flag(t, cmd, "preset"), flag(t, cmd, "no-weights") == "true")
		for _, m := range c.VolumeMounts {
			if lim, ok := limits[m.Name]; ok && strings.HasPrefix(flag(t, cmd, "out"), m.MountPath+"/") && lim.Value() < size {
				t.Errorf("%s: preset %s (%d bytes) does not fit emptyDir %s of %s", p.owner, flag(t, cmd, "preset"), size, m.Name, lim.String())
			}
		}
	}
}

// presetSize is the bytes of a preset's model directory as `model init`
// writes it: its side files, written here, and its weights.
func presetSize(t *testing.T, name string, noWeights bool) int64 {
	t.Helper()
	p, err := preset.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if err := preset.Write(t.Context(), name, dir, preset.Options{NoWeights: true}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += info.Size()
	}
	if !noWeights {
		n += p.DataSize("")
	}
	return n
}

// checkSessionAffinity: the coordinator's Service keeps the affinity the
// values ask for.
func checkSessionAffinity(t *testing.T, r *renderedChart) {
	t.Helper()
	want := r.values["coordinator"].(map[string]any)["service"].(map[string]any)["sessionAffinity"]
	n := 0
	for _, o := range r.byKind("Service") {
		svc := o.obj.(*corev1.Service)
		if svc.Spec.Selector["app.kubernetes.io/component"] != "coordinator" {
			continue
		}
		n++
		if string(svc.Spec.SessionAffinity) != want {
			t.Errorf("Service %s: sessionAffinity %q; values say %v", svc.Name, svc.Spec.SessionAffinity, want)
		}
	}
	if n != 1 {
		t.Errorf("%d Services of the coordinator; want 1", n)
	}
}

// TestChartFlagsAreTheBinarys: every flag the chart gives a tandem
// process is one the binary has. It renames each flag of each rendered
// container in turn and expects the command tree to refuse it, so the
// parse in TestChartRenders would fail on a flag renamed in the binary
// (or misspelt in a template, or in extraArgs).
func TestChartFlagsAreTheBinarys(t *testing.T) {
	checked := map[string]bool{}
	for _, file := range []string{"", filepath.Join(chartDir, "ci", "gpu-tp2-tp8-values.yaml"), filepath.Join(chartDir, "ci", "multinode-lws-values.yaml")} {
		r := renderChart(t, file)
		for _, p := range r.pods(t) {
			for _, c := range slices.Concat(p.template.Spec.InitContainers, p.template.Spec.Containers) {
				if c.Name == "etcd" {
					continue
				}
				args := make([]string, len(c.Args))
				for i, a := range c.Args {
					args[i] = p.expand(t, &c, a)
				}
				if _, err := parseCommand(args); err != nil {
					t.Fatalf("%s/%s: %v", p.owner, c.Name, err)
				}
				for i, a := range args {
					name, value, hasValue := strings.Cut(a, "=")
					if !strings.HasPrefix(name, "--") {
						continue
					}
					bad := slices.Clone(args)
					bad[i] = name + "-renamed"
					if hasValue {
						bad[i] += "=" + value
					}
					_, err := parseCommand(bad)
					if err == nil || !strings.Contains(err.Error(), name+"-renamed") {
						t.Errorf("%s/%s: %s renamed to %s-renamed: parsed (%v); want a refusal naming it", p.owner, c.Name, name, name, err)
					}
					checked[args[0]+" "+name] = true
				}
			}
		}
	}
	for _, want := range []string{"coordinator --etcd-prefix", "coordinator --queue-timeout", "coordinator --migration-limit", "coordinator --max-in-flight",
		"worker --etcd-prefix", "worker --kv-cache-dtype", "worker --no-prefix-caching", "model --no-weights"} {
		if !checked[want] {
			t.Errorf("no rendered container gives %s; checked %v", want, slices.Sorted(func(yield func(string) bool) {
				for k := range checked {
					if !yield(k) {
						return
					}
				}
			}))
		}
	}
}

// TestChartReleasesShareEtcd: two releases on one external etcd root
// their keys apart (--etcd-prefix from the release), and etcd.prefix
// overrides the root.
func TestChartReleasesShareEtcd(t *testing.T) {
	external := filepath.Join(chartDir, "ci", "external-etcd-values.yaml")
	prefixes := map[string]string{}
	for _, release := range []string{"tp2", "tp8"} {
		r := renderChartAs(t, external, release)
		checkRelease(t, r)
		for _, p := range r.pods(t) {
			for _, c := range p.template.Spec.Containers {
				if cmd := command(t, p.owner, c.Args); cmd.Flags().Lookup("etcd-prefix") != nil {
					prefixes[release] = flag(t, cmd, "etcd-prefix")
				}
			}
		}
	}
	if prefixes["tp2"] == "" || prefixes["tp2"] == prefixes["tp8"] {
		t.Errorf("releases tp2 and tp8 on one etcd: prefixes %v", prefixes)
	}
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, []byte("etcd:\n  external:\n    endpoints: [http://etcd.shared:2379]\n  prefix: /shared/tandem-a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	checkRelease(t, renderChart(t, file)) // checkPrefix holds every process to /shared/tandem-a
}
