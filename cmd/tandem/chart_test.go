package main

// The Helm chart (deploy/helm/tandem) rendered with Helm's own Go SDK over
// the values files kept in its ci/ directory, and held to the binary: every
// rendered object decodes strictly into its real API type, every tandem
// container's arguments parse with this command tree, Services name the
// ports the arguments open, and the default values start what `tandem up`
// starts. They run with this package's other tests (Helm and the
// Kubernetes API modules are test dependencies only: the binary links
// neither), and alone as `make chart-test`.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	chartDir       = "../../deploy/helm/tandem"
	chartRelease   = "tandem"
	chartNamespace = "serving"
)

// object is one rendered manifest, decoded into its API type.
type object struct {
	kind, name, source string
	apiVersion         string
	obj                any
	raw                []byte // the manifest as rendered
}

// renderedChart is a release rendered from one values file.
type renderedChart struct {
	release string         // the release's name
	values  map[string]any // the values after defaults and overrides
	objects []object
	notes   string
}

// byKind returns the objects of a kind.
func (r *renderedChart) byKind(kind string) []object {
	var out []object
	for _, o := range r.objects {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// get returns the object of kind and name, failing the test without one.
func get[T any](t *testing.T, r *renderedChart, kind, name string) *T {
	t.Helper()
	for _, o := range r.objects {
		if o.kind == kind && o.name == name {
			return o.obj.(*T)
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

// newForKind is the API type each kind the chart renders decodes into.
// LeaderWorkerSet's is declared in chart_lws_test.go.
func newForKind(apiVersion, kind string) (any, bool) {
	switch apiVersion + " " + kind {
	case "v1 Service":
		return &corev1.Service{}, true
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, true
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "networking.k8s.io/v1 Ingress":
		return &networkingv1.Ingress{}, true
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, true
	case lwsAPIVersion + " LeaderWorkerSet":
		return &leaderWorkerSet{}, true
	}
	return nil, false
}

func loadChart(t *testing.T) *chartv2.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return ch
}

// readValues reads a values file ("" for none).
func readValues(t *testing.T, file string) map[string]any {
	t.Helper()
	if file == "" {
		return map[string]any{}
	}
	vals, err := common.ReadValuesFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

// renderValues renders the chart with vals as `helm template` does
// (schema validation included) and returns the manifests by template.
func renderValues(ch *chartv2.Chart, vals map[string]any) (common.Values, map[string]string, error) {
	return renderRelease(ch, vals, chartRelease)
}

// renderRelease is renderValues for a release of another name.
func renderRelease(ch *chartv2.Chart, vals map[string]any, release string) (common.Values, map[string]string, error) {
	top, err := chartutil.ToRenderValues(ch, vals,
		common.ReleaseOptions{Name: release, Namespace: chartNamespace, IsInstall: true}, common.DefaultCapabilities)
	if err != nil {
		return nil, nil, err
	}
	files, err := engine.Render(ch, top)
	return top, files, err
}

// renderChart renders the chart with a values file and decodes every
// manifest strictly into its API type: an unknown or misspelt field, a
// duplicate key or a kind the test does not know fails.
func renderChart(t *testing.T, valuesFile string) *renderedChart {
	t.Helper()
	return renderChartAs(t, valuesFile, chartRelease)
}

// renderChartAs is renderChart for a release of another name.
func renderChartAs(t *testing.T, valuesFile, release string) *renderedChart {
	t.Helper()
	ch := loadChart(t)
	top, files, err := renderRelease(ch, readValues(t, valuesFile), release)
	if err != nil {
		t.Fatalf("rendering with %s: %v", valuesFile, err)
	}
	vals, err := top.Table("Values")
	if err != nil {
		t.Fatal(err)
	}
	r := &renderedChart{release: release, values: vals.AsMap()}
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range files {
			if !yield(name) {
				return
			}
		}
	})
	for _, name := range names {
		switch {
		case strings.HasSuffix(name, "NOTES.txt"):
			r.notes = files[name]
			continue
		case strings.HasPrefix(filepath.Base(name), "_"):
			continue
		}
		r.objects = append(r.objects, decodeManifests(t, name, files[name])...)
	}
	if len(r.objects) == 0 {
		t.Fatalf("%s: nothing rendered", valuesFile)
	}
	return r
}

func decodeManifests(t *testing.T, source, text string) []object {
	t.Helper()
	var out []object
	rd := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(text)))
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", source, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s: %v\n%s", source, err, doc)
		}
		obj, ok := newForKind(head.APIVersion, head.Kind)
		if !ok {
			t.Fatalf("%s: %s %s of %s: no API type known to this test", source, head.Kind, head.Metadata.Name, head.APIVersion)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s: %s %s does not decode strictly into its API type: %v\n%s", source, head.Kind, head.Metadata.Name, err, doc)
		}
		if head.Metadata.Name == "" {
			t.Fatalf("%s: %s without a name", source, head.Kind)
		}
		out = append(out, object{kind: head.Kind, name: head.Metadata.Name, source: source, apiVersion: head.APIVersion, obj: obj, raw: doc})
	}
	return out
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
		}
	}
	return b.Bytes()
}

// valuesFiles are the values files of the matrix: the defaults and every
// ci/*-values.yaml.
func valuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) < 7 {
		t.Fatalf("values files in %s/ci: %v %v", chartDir, files, err)
	}
	return files
}

// TestChartLint runs Helm's linter (chart file, values against the
// schema, templates, dependencies) on every values file; warnings fail.
func TestChartLint(t *testing.T) {
	for _, file := range valuesFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			res := lint.RunAll(chartDir, readValues(t, file), chartNamespace)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				}
			}
		})
	}
}

// TestChartRenders holds every values file's release to the binary and to
// the cluster's conventions (chart_check_test.go).
func TestChartRenders(t *testing.T) {
	for _, file := range valuesFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			r := renderChart(t, file)
			checkRelease(t, r)
		})
	}
}

// TestChartRejectsBadValues renders every ci/invalid/*.yaml, each of
// which names, in a "# want:" line, the value its error must name.
func TestChartRejectsBadValues(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "invalid", "*.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("invalid values files: %v %v", files, err)
	}
	ch := loadChart(t)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			text, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want := ""
			for line := range strings.Lines(string(text)) {
				if w, ok := strings.CutPrefix(strings.TrimSpace(line), "# want:"); ok {
					want = strings.TrimSpace(w)
				}
			}
			if want == "" {
				t.Fatal(`no "# want:" line`)
			}
			_, _, err = renderValues(ch, readValues(t, file))
			if err == nil {
				t.Fatalf("rendered without error; want one naming %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error does not name %q:\n%v", want, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestChartDefaultsAreTandemUp: the chart's default values start the
// groups `tandem up` starts with its default flags (read from the
// command, not copied), with the same preset, device, engine sizes and
// coordinator ports and limits.
func TestChartDefaultsAreTandemUp(t *testing.T) {
	up := newUpCmd()
	def := func(name string) string {
		f := up.Flags().Lookup(name)
		if f == nil {
			t.Fatalf("tandem up has no --%s", name)
		}
		return f.DefValue
	}
	atoi := func(name string) int {
		n, err := strconv.Atoi(def(name))
		if err != nil {
			t.Fatalf("--%s default %q: %v", name, def(name), err)
		}
		return n
	}
	f := upFlags{mode: def("mode"), prefillTP: atoi("prefill-tp"), decodeTP: atoi("decode-tp"), tp: atoi("tp"),
		prefillGroups: atoi("prefill-groups"), decodeGroups: atoi("decode-groups"), unifiedGroups: atoi("groups")}
	specs, err := f.groups()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]int{} // role -> groups, tp
	for _, g := range specs {
		w := want[string(g.role)]
		want[string(g.role)] = [2]int{w[0] + 1, g.tp}
	}

	r := renderChart(t, "")
	got := map[string][2]int{}
	for _, o := range r.byKind("StatefulSet") {
		sts := o.obj.(*appsv1.StatefulSet)
		role := sts.Spec.Template.Labels["app.kubernetes.io/component"]
		if role == "etcd" {
			continue
		}
		c := sts.Spec.Template.Spec.Containers[0]
		cmd := command(t, o.name, c.Args)
		tp, _ := strconv.Atoi(flag(t, cmd, "tp"))
		got[role] = [2]int{int(deref(sts.Spec.Replicas, 1)), tp}
		for _, name := range []string{"device", "max-batch-tokens", "kv-cache-mb", "kv-cache-dtype", "no-prefix-caching", "model-name"} {
			wantV := ""
			if name == "model-name" {
				wantV = def("preset") // up serves the preset under its name
			} else {
				wantV = def(name)
			}
			if flag(t, cmd, name) != wantV {
				t.Errorf("%s: --%s %s; tandem up's default is %s", o.name, name, flag(t, cmd, name), wantV)
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("chart defaults run groups (role: count, tp) %v; tandem up's defaults %v", got, want)
	}
	coord := get[appsv1.Deployment](t, r, "Deployment", chartRelease+"-coordinator")
	cmd := command(t, "coordinator", coord.Spec.Template.Spec.Containers[0].Args)
	for _, name := range []string{"grpc-addr", "http-addr"} {
		_, wantPort, _ := net.SplitHostPort(def(name))
		if _, p, _ := net.SplitHostPort(flag(t, cmd, name)); p != wantPort {
			t.Errorf("coordinator --%s %s; tandem up listens on port %s", name, flag(t, cmd, name), wantPort)
		}
	}
	for _, name := range []string{"max-in-flight", "queue-timeout", "migration-limit"} {
		if flag(t, cmd, name) != def(name) {
			t.Errorf("coordinator --%s %s; tandem up's default is %s", name, flag(t, cmd, name), def(name))
		}
	}
}
