package main

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// pod is one pod the release would run: a pod template, and for a
// LeaderWorkerSet one pod of a group (its worker index).
type pod struct {
	owner     string // kind/name
	name      string // the pod's name, as its controller names it
	role      string // app.kubernetes.io/component
	template  *corev1.PodTemplateSpec
	lwsIndex  int // the pod's index in its LWS group; -1 for other pods
	lwsGroups int
}

// ports are the ports a pod's processes listen on, by container port name.
type ports map[string]int

// pods lists every pod of the release; a LeaderWorkerSet group
// contributes each of its pods (size), all from the worker template.
func (r *renderedChart) pods(t *testing.T) []pod {
	t.Helper()
	var out []pod
	for _, o := range r.objects {
		switch w := o.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, pod{owner: "Deployment/" + o.name, name: o.name + "-5d8f7c9b4-x2x7q", template: &w.Spec.Template, lwsIndex: -1})
		case *appsv1.StatefulSet:
			out = append(out, pod{owner: "StatefulSet/" + o.name, name: o.name + "-0", template: &w.Spec.Template, lwsIndex: -1})
		case *leaderWorkerSet:
			if w.Spec.LeaderWorkerTemplate.LeaderTemplate != nil {
				t.Errorf("LeaderWorkerSet %s: a leader template of its own; the chart gives leader and workers one template", o.name)
			}
			size := int(deref(w.Spec.LeaderWorkerTemplate.Size, 1))
			for i := range size {
				out = append(out, pod{owner: "LeaderWorkerSet/" + o.name, name: fmt.Sprintf("%s-0-%d", o.name, i),
					template: &w.Spec.LeaderWorkerTemplate.WorkerTemplate, lwsIndex: i, lwsGroups: int(deref(w.Spec.Replicas, 1))})
			}
		}
	}
	for i := range out {
		out[i].role = out[i].template.Labels["app.kubernetes.io/component"]
		if out[i].role == "" {
			t.Errorf("%s: pods without an app.kubernetes.io/component label", out[i].owner)
		}
	}
	return out
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// expand replaces $(VAR) in s as the kubelet does, with the container's
// environment: values, and the downward API fields the chart uses filled
// as the pod p would have them.
func (p pod) expand(t *testing.T, c *corev1.Container, s string) string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = p.expandWith(env, e.Value)
		case e.ValueFrom.FieldRef != nil:
			switch f := e.ValueFrom.FieldRef.FieldPath; f {
			case "status.podIP":
				env[e.Name] = "10.1.2.3"
			case "metadata.name":
				env[e.Name] = p.name
			case "metadata.labels['" + lwsGroupIndexLabel + "']":
				env[e.Name] = "0"
			case "metadata.labels['" + lwsWorkerIndexLabel + "']":
				if p.lwsIndex < 0 {
					t.Errorf("%s: %s reads the LWS worker index outside a LeaderWorkerSet", p.owner, e.Name)
				}
				env[e.Name] = strconv.Itoa(p.lwsIndex)
			default:
				t.Errorf("%s: env %s from field %s, unknown to this test", p.owner, e.Name, f)
			}
		}
	}
	out := p.expandWith(env, s)
	if strings.Contains(out, "$(") {
		t.Errorf("%s: %q refers to a variable the container does not define", p.owner, s)
	}
	return out
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func (p pod) expandWith(env map[string]string, s string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// command parses args with the real command tree: the subcommand they
// name, every flag known to it, no stray arguments.
func command(t *testing.T, owner string, args []string) *cobra.Command {
	t.Helper()
	cmd, err := parseCommand(args)
	if err != nil {
		t.Fatalf("%s: %v", owner, err)
	}
	return cmd
}

func parseCommand(args []string) (*cobra.Command, error) {
	root := newRootCmd()
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		return nil, fmt.Errorf("%v names no tandem command: %v", args, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return nil, fmt.Errorf("tandem %s does not accept %v: %w", cmd.Name(), args, err)
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return nil, fmt.Errorf("tandem %s: %w", cmd.Name(), err)
	}
	return cmd, nil
}

func flag(t *testing.T, cmd *cobra.Command, name string) string {
	t.Helper()
	f := cmd.Flags().Lookup(name)
	if f == nil {
		t.Fatalf("tandem %s has no --%s", cmd.Name(), name)
	}
	return f.Value.String()
}

func portOf(t *testing.T, owner, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil || n == 0 {
		t.Fatalf("%s: %q is not a fixed listen address", owner, addr)
	}
	return n
}

// checkRelease holds a rendered release to the binary and to the
// conventions the issue asks for.
func checkRelease(t *testing.T, r *renderedChart) {
	etcdURLs := checkEtcd(t, r)
	pods := r.pods(t)
	opened := map[string]ports{} // by pod owner and index
	groups := map[string][]int{} // group name -> ranks seen
	for _, p := range pods {
		checkPodSafety(t, p)
		checkStorage(t, r, p)
		opened[p.key()] = checkContainers(t, r, p, etcdURLs, groups)
	}
	checkSessionAffinity(t, r)
	checkGroups(t, r, groups)
	checkServices(t, r, pods, opened)
	checkPDBs(t, r, pods)
	if !strings.Contains(r.notes, "tandem generate --addr") || !strings.Contains(r.notes, "/v1/chat/completions") {
		t.Errorf("NOTES.txt does not show how to call the gRPC and OpenAI APIs:\n%s", r.notes)
	}
}

func (p pod) key() string { return fmt.Sprintf("%s#%d", p.owner, p.lwsIndex) }

// checkPodSafety: non-root, read-only root filesystems, no privilege
// escalation, CPU and memory requests on every container.
func checkPodSafety(t *testing.T, p pod) {
	t.Helper()
	spec := &p.template.Spec
	if sc := spec.SecurityContext; sc == nil || !deref(sc.RunAsNonRoot, false) || deref(sc.RunAsUser, 0) == 0 {
		t.Errorf("%s: pod not run as a non-root user", p.owner)
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		sc := c.SecurityContext
		if sc == nil || !deref(sc.ReadOnlyRootFilesystem, false) || deref(sc.AllowPrivilegeEscalation, true) {
			t.Errorf("%s: container %s: root filesystem not read-only or privilege escalation allowed", p.owner, c.Name)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("%s: container %s requests no CPU or memory", p.owner, c.Name)
		}
	}
}

// checkContainers parses every tandem container of p and returns the
// ports its processes open, by the container port names that carry them.
func checkContainers(t *testing.T, r *renderedChart, p pod, etcdURLs []string, groups map[string][]int) ports {
	t.Helper()
	open := ports{}
	var modelDirs, initOut []string
	var inits []*cobra.Command
	runs := ""
	for _, c := range slices.Concat(p.template.Spec.InitContainers, p.template.Spec.Containers) {
		args := make([]string, len(c.Args))
		for i, a := range c.Args {
			args[i] = p.expand(t, &c, a)
		}
		owner := p.owner + "/" + c.Name
		if c.Name == "etcd" {
			maps.Copy(open, etcdPorts(t, owner, args))
			checkEtcdTLS(t, r, p, owner, &c, args)
			continue
		}
		if len(c.Command) > 0 {
			t.Errorf("%s: overrides the image's entrypoint (tandem) with %v", owner, c.Command)
		}
		cmd := command(t, owner, args)
		switch cmd.CommandPath() {
		case "tandem model init":
			if flag(t, cmd, "exist-ok") != "true" {
				t.Errorf("%s: model init without --exist-ok fails when the init container runs again", owner)
			}
			initOut = append(initOut, flag(t, cmd, "out"))
			inits = append(inits, cmd)
			if !mountedAt(&c, flag(t, cmd, "out"), false) {
				t.Errorf("%s: --out %s is not on a writable volume", owner, flag(t, cmd, "out"))
			}
		case "tandem coordinator":
			checkEndpoints(t, owner, flag(t, cmd, "etcd-endpoints"), etcdURLs)
			open["grpc"] = portOf(t, owner, flag(t, cmd, "grpc-addr"))
			open["http"] = portOf(t, owner, flag(t, cmd, "http-addr"))
			modelDirs = append(modelDirs, checkModel(t, r, owner, &c, cmd))
			checkProbes(t, owner, &c, "http", "/readyz", "/healthz")
			checkInternalTLS(t, r, p, owner, &c, cmd)
			checkPublicSecurity(t, r, p, owner, &c, cmd)
			checkCoordinatorValues(t, r, owner, cmd)
			runs = "coordinator"
		case "tandem worker":
			checkEndpoints(t, owner, flag(t, cmd, "etcd-endpoints"), etcdURLs)
			modelDirs = append(modelDirs, checkModel(t, r, owner, &c, cmd))
			maps.Copy(open, checkWorker(t, r, p, owner, &c, args, groups))
			checkProbes(t, owner, &c, "metrics-0", "/readyz", "/healthz")
			checkInternalTLS(t, r, p, owner, &c, cmd)
			checkWorkerValues(t, r, p, owner, cmd)
			runs = "worker"
		default:
			t.Errorf("%s: runs tandem %s, which the chart should not", owner, cmd.Name())
		}
		checkContainerPorts(t, owner, &c, open)
	}
	for _, out := range initOut {
		if !slices.Contains(modelDirs, out) {
			t.Errorf("%s: the init container writes %s, which no container serves (%v)", p.owner, out, modelDirs)
		}
	}
	for _, init := range inits {
		// The coordinator only tokenizes: its copy of a preset holds no
		// weights; a worker's must.
		if noWeights := flag(t, init, "no-weights") == "true"; noWeights != (runs == "coordinator") {
			t.Errorf("%s: model init --no-weights=%v in a pod running the %s", p.owner, noWeights, runs)
		}
	}
	return open
}

// etcdPorts are the ports of an etcd member's listen URLs.
func etcdPorts(t *testing.T, owner string, args []string) ports {
	t.Helper()
	open := ports{}
	for _, a := range args {
		for flagName, port := range map[string]string{"--listen-client-urls=": "client", "--listen-peer-urls=": "peer", "--listen-metrics-urls=": "metrics"} {
			if v, ok := strings.CutPrefix(a, flagName); ok {
				u, err := url.Parse(v)
				if err != nil {
					t.Fatalf("%s: %s: %v", owner, a, err)
				}
				open[port] = portOf(t, owner, u.Host)
			}
		}
	}
	return open
}

// checkWorker checks a worker container: its flags validate as the
// binary's do, its pod's ranks, their GPUs and ports.
func checkWorker(t *testing.T, r *renderedChart, p pod, owner string, c *corev1.Container, args []string, groups map[string][]int) ports {
	t.Helper()
	f, fl := parseWorkerFlags(t, args[1:])
	if err := f.validate(); err != nil {
		t.Fatalf("%s: the worker would refuse its flags: %v", owner, err)
	}
	v := r.values[p.role].(map[string]any)
	tp, k := int(v["tp"].(float64)), int(v["tp"].(float64))
	if v["multiNode"] == true {
		k = tp / int(v["nodesPerGroup"].(float64))
	}
	if string(f.role) != p.role || f.g.tp != tp || f.localRanks != k || f.be.device != v["device"] {
		t.Errorf("%s: worker --role %s --tp %d --local-ranks %d --device %s; values say %s tp %d, %d ranks a pod, device %v",
			owner, f.role, f.g.tp, f.localRanks, f.be.device, p.role, tp, k, v["device"])
	}
	gpus := c.Resources.Limits["nvidia.com/gpu"]
	switch {
	case f.be.device == "cuda" && gpus.Value() != int64(k):
		t.Errorf("%s: %d ranks on cuda with nvidia.com/gpu %s", owner, k, gpus.String())
	case f.be.device != "cuda" && !gpus.IsZero():
		t.Errorf("%s: nvidia.com/gpu on a %s group", owner, f.be.device)
	}
	open := ports{}
	for i := range f.localRanks {
		rargs, err := f.rankArgs(fl, i, f.model.dir, f.model.name)
		if err != nil {
			t.Fatalf("%s: rank %d: %v", owner, i, err)
		}
		rf, _ := parseWorkerFlags(t, rargs[1:])
		if err := rf.validate(); err != nil {
			t.Fatalf("%s: local rank %d would refuse %v: %v", owner, i, rargs, err)
		}
		ring, err := ringAdvertised(rf.g.listen, rf.advertise)
		if err != nil {
			t.Errorf("%s: rank %d: %v", owner, rf.g.rank, err)
		}
		if p.lwsIndex >= 0 && !strings.HasPrefix(ring, "10.1.2.3:") {
			t.Errorf("%s: rank %d of a group spanning nodes publishes ring address %q, not its pod's IP", owner, rf.g.rank, ring)
		}
		if rf.advertise != "" && !strings.HasPrefix(rf.advertise, "10.1.2.3:") {
			t.Errorf("%s: rank %d advertises %q, not its pod's IP", owner, rf.g.rank, rf.advertise)
		}
		if rf.be.gpu != i {
			t.Errorf("%s: local rank %d on GPU %d", owner, i, rf.be.gpu)
		}
		open[fmt.Sprintf("grpc-%d", i)] = portOf(t, owner, rf.grpcAddr)
		open[fmt.Sprintf("metrics-%d", i)] = portOf(t, owner, rf.metricsAddr)
		if p.lwsIndex >= 0 {
			open[fmt.Sprintf("ring-%d", i)] = portOf(t, owner, rf.g.listen)
		}
		groups[rf.g.group] = append(groups[rf.g.group], rf.g.rank)
	}
	return open
}

// checkGroups: every group's ranks, over all its pods, are 0..tp-1 once
// each, and groups are named apart.
func checkGroups(t *testing.T, r *renderedChart, groups map[string][]int) {
	t.Helper()
	for name, ranks := range groups {
		slices.Sort(ranks)
		for i, rank := range ranks {
			if rank != i {
				t.Errorf("group %s has ranks %v, want 0..%d once each", name, ranks, len(ranks)-1)
				break
			}
		}
		if name == "" || strings.Contains(name, "/") {
			t.Errorf("bad group name %q", name)
		}
	}
	if len(groups) == 0 {
		t.Error("no worker group rendered")
	}
}

// checkModel: the model directory is on a read-only mount of the
// container, and the served name is the one the values give.
func checkModel(t *testing.T, r *renderedChart, owner string, c *corev1.Container, cmd *cobra.Command) string {
	t.Helper()
	dir := flag(t, cmd, "model")
	if !mountedAt(c, dir, true) {
		t.Errorf("%s: --model %s is not on a read-only volume mount", owner, dir)
	}
	if flag(t, cmd, "preset") != "" {
		t.Errorf("%s: --preset would write into the cache at start-up; the chart gives --model", owner)
	}
	m := r.values["model"].(map[string]any)
	want := m["name"].(string)
	if want == "" && m["source"] == "preset" {
		want = m["preset"].(string)
	}
	if want != "" && flag(t, cmd, "model-name") != want {
		t.Errorf("%s: --model-name %s, values say %s", owner, flag(t, cmd, "model-name"), want)
	}
	return dir
}

// mountedAt reports whether path lies on a volume mount of c that is
// read-only (readOnly) or writable (!readOnly).
func mountedAt(c *corev1.Container, path string, readOnly bool) bool {
	for _, m := range c.VolumeMounts {
		if (path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")) && m.ReadOnly == readOnly {
			return true
		}
	}
	return false
}

func checkProbes(t *testing.T, owner string, c *corev1.Container, port, ready, live string) {
	t.Helper()
	for _, pr := range []struct {
		name string
		p    *corev1.Probe
		path string
	}{{"readiness", c.ReadinessProbe, ready}, {"liveness", c.LivenessProbe, live}} {
		if pr.p == nil || pr.p.HTTPGet == nil || pr.p.HTTPGet.Path != pr.path || pr.p.HTTPGet.Port.String() != port {
			t.Errorf("%s: %s probe is not GET %s on port %s: %+v", owner, pr.name, pr.path, port, pr.p)
		}
	}
}

// checkContainerPorts: every declared container port is one the
// container's processes open, under the same name.
func checkContainerPorts(t *testing.T, owner string, c *corev1.Container, open ports) {
	t.Helper()
	for _, cp := range c.Ports {
		if got, ok := open[cp.Name]; !ok || got != int(cp.ContainerPort) {
			t.Errorf("%s: container port %s %d, but the processes open %v", owner, cp.Name, cp.ContainerPort, open)
		}
	}
}

// checkEndpoints: the etcd endpoints a process is given are those of the
// release's etcd.
func checkEndpoints(t *testing.T, owner, endpoints string, want []string) {
	t.Helper()
	if got := strings.Split(endpoints, ","); !slices.Equal(got, want) {
		t.Errorf("%s: --etcd-endpoints %v, want %v", owner, got, want)
	}
}

// checkEtcd returns the client URLs processes must be given: the
// external ones, or one per member of the bundled StatefulSet, each
// resolving through its headless Service to that member's client port.
func checkEtcd(t *testing.T, r *renderedChart) []string {
	t.Helper()
	e := r.values["etcd"].(map[string]any)
	if ext := e["external"].(map[string]any)["endpoints"].([]any); len(ext) > 0 {
		var urls []string
		for _, u := range ext {
			urls = append(urls, u.(string))
		}
		for _, o := range r.byKind("StatefulSet") {
			if strings.HasSuffix(o.name, "-etcd") {
				t.Errorf("external etcd, and a bundled one rendered too: %s", o.name)
			}
		}
		return urls
	}
	var sts *appsv1.StatefulSet
	var name string
	for _, o := range r.byKind("StatefulSet") {
		if o.obj.(*appsv1.StatefulSet).Spec.Template.Labels["app.kubernetes.io/component"] == "etcd" {
			sts, name = o.obj.(*appsv1.StatefulSet), o.name
		}
	}
	if sts == nil {
		t.Fatal("no etcd StatefulSet")
	}
	replicas := int(deref(sts.Spec.Replicas, 1))
	if replicas != int(e["replicas"].(float64)) {
		t.Errorf("etcd: %d replicas, values say %v", replicas, e["replicas"])
	}
	svc := get[corev1.Service](t, r, "Service", sts.Spec.ServiceName)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("etcd Service %s: not headless with unready addresses published (members must find each other before they are ready)", svc.Name)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("etcd Service %s does not select the members", svc.Name)
	}
	client := -1
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.String() == "client" {
			client = int(p.Port)
		}
	}
	scheme := "http"
	if internalTLSSecret(r) != "" {
		scheme = "https"
	}
	var urls, peers []string
	for i := range replicas {
		host := fmt.Sprintf("%s-%d.%s.%s.svc", name, i, svc.Name, chartNamespace)
		urls = append(urls, fmt.Sprintf("%s://%s:%d", scheme, host, client))
		peers = append(peers, fmt.Sprintf("%s-%d=%s://%s:2380", name, i, scheme, host))
	}
	args := strings.Join(sts.Spec.Template.Spec.Containers[0].Args, " ")
	if !strings.Contains(args, "--initial-cluster="+strings.Join(peers, ",")+" ") {
		t.Errorf("etcd --initial-cluster does not name the %d members %v: %s", replicas, peers, args)
	}
	return urls
}

// checkServices: every Service selects pods of the release, and each of
// its ports targets a container port the selected pods' processes open.
func checkServices(t *testing.T, r *renderedChart, pods []pod, opened map[string]ports) {
	t.Helper()
	for _, o := range r.byKind("Service") {
		svc := o.obj.(*corev1.Service)
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		n := 0
		for _, p := range pods {
			if !sel.Matches(labels.Set(p.template.Labels)) {
				continue
			}
			n++
			for _, sp := range svc.Spec.Ports {
				name := sp.TargetPort.String()
				if got, ok := opened[p.key()][name]; !ok {
					t.Errorf("Service %s port %s targets %q, which %s does not open", o.name, sp.Name, name, p.owner)
				} else if sp.Name == name && got != int(sp.Port) && svc.Spec.ClusterIP == corev1.ClusterIPNone {
					t.Errorf("headless Service %s port %s is %d, the process opens %d", o.name, sp.Name, sp.Port, got)
				}
			}
		}
		if n == 0 || len(svc.Spec.Selector) == 0 {
			t.Errorf("Service %s selects no pod of the release", o.name)
		}
	}
}

// checkPDBs: every workload's pods are covered by a PodDisruptionBudget.
func checkPDBs(t *testing.T, r *renderedChart, pods []pod) {
	t.Helper()
	for _, p := range pods {
		covered := false
		for _, o := range r.byKind("PodDisruptionBudget") {
			sel := o.obj.(*policyv1.PodDisruptionBudget).Spec.Selector
			if s, err := metav1.LabelSelectorAsSelector(sel); err == nil && s.Matches(labels.Set(p.template.Labels)) {
				covered = true
			}
		}
		if !covered {
			t.Errorf("%s: no PodDisruptionBudget covers its pods", p.owner)
		}
	}
}

// internalTLSSecret is the Secret of the release's mutual TLS; "" without.
func internalTLSSecret(r *renderedChart) string {
	v := r.values["internalTLS"].(map[string]any)
	if v["enabled"] != true {
		return ""
	}
	return v["secretName"].(string)
}

// secretMount returns where c mounts Secret secret of pod p, read-only;
// "" if it does not.
func secretMount(p pod, c *corev1.Container, secret string) string {
	for _, v := range p.template.Spec.Volumes {
		if v.Secret == nil || v.Secret.SecretName != secret {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name && m.ReadOnly {
				return m.MountPath
			}
		}
	}
	return ""
}

// checkInternalTLS: with internalTLS a tandem process is given the CA,
// certificate and key of the values' Secret, mounted read-only; without,
// none.
func checkInternalTLS(t *testing.T, r *renderedChart, p pod, owner string, c *corev1.Container, cmd *cobra.Command) {
	t.Helper()
	secret := internalTLSSecret(r)
	files := []string{flag(t, cmd, "internal-ca"), flag(t, cmd, "internal-cert"), flag(t, cmd, "internal-key")}
	if secret == "" {
		if files[0]+files[1]+files[2] != "" {
			t.Errorf("%s: internal TLS files %v, but internalTLS is off", owner, files)
		}
		return
	}
	dir := secretMount(p, c, secret)
	if dir == "" {
		t.Fatalf("%s: does not mount Secret %s read-only", owner, secret)
	}
	for i, key := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if files[i] != dir+"/"+key {
			t.Errorf("%s: internal TLS file %s, want %s/%s (the Secret's %s)", owner, files[i], dir, key, key)
		}
	}
}

// checkEtcdTLS: with internalTLS the bundled etcd serves its client and
// peer ports with the Secret's certificate and requires client
// certificates of its CA on both.
func checkEtcdTLS(t *testing.T, r *renderedChart, p pod, owner string, c *corev1.Container, args []string) {
	t.Helper()
	secret := internalTLSSecret(r)
	if secret == "" {
		return
	}
	dir := secretMount(p, c, secret)
	if dir == "" {
		t.Fatalf("%s: does not mount Secret %s read-only", owner, secret)
	}
	for _, want := range []string{"--client-cert-auth", "--peer-client-cert-auth",
		"--trusted-ca-file=" + dir + "/ca.crt", "--cert-file=" + dir + "/tls.crt", "--key-file=" + dir + "/tls.key",
		"--peer-trusted-ca-file=" + dir + "/ca.crt", "--peer-cert-file=" + dir + "/tls.crt", "--peer-key-file=" + dir + "/tls.key"} {
		if !slices.Contains(args, want) {
			t.Errorf("%s: no %s", owner, want)
		}
	}
	for _, a := range args {
		if strings.Contains(a, "-urls=http://") && !strings.HasPrefix(a, "--listen-metrics-urls=") {
			t.Errorf("%s: %s in plain text with internalTLS", owner, a)
		}
	}
}

// checkPublicSecurity: the coordinator reads the API keys and the public
// certificate from the values' Secrets, mounted read-only, and its probes
// speak HTTPS when its HTTP port does.
func checkPublicSecurity(t *testing.T, r *renderedChart, p pod, owner string, c *corev1.Container, cmd *cobra.Command) {
	t.Helper()
	v := r.values["coordinator"].(map[string]any)
	keys := v["apiKeys"].(map[string]any)["secretName"].(string)
	if got := flag(t, cmd, "api-keys-file"); keys == "" && got != "" || keys != "" && (secretMount(p, c, keys) == "" || got != secretMount(p, c, keys)+"/api-keys") {
		t.Errorf("%s: --api-keys-file %q; the values' Secret %q", owner, got, keys)
	}
	if flag(t, cmd, "protect-metrics") != fmt.Sprint(v["protectMetrics"]) {
		t.Errorf("%s: --protect-metrics %s; values %v", owner, flag(t, cmd, "protect-metrics"), v["protectMetrics"])
	}
	certs := v["tls"].(map[string]any)["secretName"].(string)
	cert, key := flag(t, cmd, "tls-cert"), flag(t, cmd, "tls-key")
	scheme := corev1.URISchemeHTTP
	if certs != "" {
		scheme = corev1.URISchemeHTTPS
		if dir := secretMount(p, c, certs); dir == "" || cert != dir+"/tls.crt" || key != dir+"/tls.key" {
			t.Errorf("%s: --tls-cert %q --tls-key %q; the values' Secret %q", owner, cert, key, certs)
		}
	} else if cert+key != "" {
		t.Errorf("%s: --tls-cert %q --tls-key %q without a Secret", owner, cert, key)
	}
	for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if pr.HTTPGet.Scheme != scheme {
			t.Errorf("%s: a probe over %s, the port serves %s", owner, pr.HTTPGet.Scheme, scheme)
		}
	}
}
