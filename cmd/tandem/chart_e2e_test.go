//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/tandemllm/tandem/cluster"
)

// TestChartAppliesToAPIServer server-side-applies (dry run, strict field
// validation) every manifest of every values file to a real
// kube-apiserver, built from k8s.io/kubernetes at the version pinned in
// hack/kube-apiserver and run against the project's embedded etcd, with
// the ServiceMonitor CRD of prometheus-operator and a LeaderWorkerSet CRD
// installed; each LeaderWorkerSet's pod template is also applied as a
// core/v1 PodTemplate, so the API server validates the pods inside it.
// `make chart-e2e` builds the server and sets
// TANDEM_KUBE_APISERVER and TANDEM_SERVICEMONITOR_CRD; without them the
// test is skipped, unless TANDEM_REQUIRE_KUBE_APISERVER=1 (CI).
func TestChartAppliesToAPIServer(t *testing.T) {
	bin, crd := os.Getenv("TANDEM_KUBE_APISERVER"), os.Getenv("TANDEM_SERVICEMONITOR_CRD")
	if bin == "" || crd == "" {
		if os.Getenv("TANDEM_REQUIRE_KUBE_APISERVER") == "1" {
			t.Fatal("TANDEM_KUBE_APISERVER and TANDEM_SERVICEMONITOR_CRD are required (make chart-e2e sets them)")
		}
		t.Skip("no kube-apiserver: run make chart-e2e")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cfg := startAPIServer(ctx, t, bin)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))

	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": chartNamespace}}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	smCRD, err := os.ReadFile(crd)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range [][]byte{smCRD, []byte(lwsCRD)} {
		installCRD(ctx, t, dyn, doc)
	}
	mapper.Reset()

	for _, file := range valuesFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			r := renderChart(t, file)
			for _, o := range r.objects {
				apply(ctx, t, dyn, mapper, o.raw, o.kind+" "+o.name)
				if lws, ok := o.obj.(*leaderWorkerSet); ok {
					pt := map[string]any{"apiVersion": "v1", "kind": "PodTemplate", "metadata": map[string]any{"name": o.name + "-worker"},
						"template": lws.Spec.LeaderWorkerTemplate.WorkerTemplate}
					doc, err := yaml.Marshal(pt)
					if err != nil {
						t.Fatal(err)
					}
					apply(ctx, t, dyn, mapper, doc, "the pod template of LeaderWorkerSet "+o.name)
				}
			}
		})
	}
}

// apply server-side-applies one manifest as a dry run with strict field
// validation: the API server's defaulting, validation and admission run,
// nothing is stored.
func apply(ctx context.Context, t *testing.T, dyn dynamic.Interface, mapper meta.RESTMapper, doc []byte, what string) {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	gvk := obj.GroupVersionKind()
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		t.Errorf("%s: the API server does not serve %s: %v", what, gvk, err)
		return
	}
	res := dyn.Resource(m.Resource)
	var ri dynamic.ResourceInterface = res
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		obj.SetNamespace(chartNamespace)
		ri = res.Namespace(chartNamespace)
	}
	body, err := obj.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	force := true
	_, err = ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
		FieldManager: "tandem-chart-test", Force: &force, DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict,
	})
	if err != nil {
		t.Errorf("%s: the API server refuses it: %v", what, err)
	}
}

// installCRD creates a CustomResourceDefinition and waits until it is
// established.
func installCRD(ctx context.Context, t *testing.T, dyn dynamic.Interface, doc []byte) {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
		t.Fatal(err)
	}
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	if _, err := crds.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("CRD %s: %v", obj.GetName(), err)
	}
	pollUntil(ctx, t, "CRD "+obj.GetName()+" established", func() bool {
		got, err := crds.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return true
			}
		}
		return false
	})
}

// pollUntil polls cond until it holds or ctx ends.
func pollUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}

// startAPIServer runs kube-apiserver on a free loopback port against a
// fresh embedded etcd, with a static admin token, until the test ends.
func startAPIServer(ctx context.Context, t *testing.T, bin string) *rest.Config {
	t.Helper()
	dir := t.TempDir()
	etcd, err := cluster.StartEmbedded(ctx, filepath.Join(dir, "etcd"), cluster.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "sa.key")
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	const token = "chart-test-token"
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokens, []byte(token+",admin,admin,system:masters\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.CommandContext(ctx, bin,
		"--etcd-servers="+etcd.Endpoints()[0],
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(port), "--cert-dir="+filepath.Join(dir, "certs"),
		"--token-auth-file="+tokens, "--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc", "--service-account-key-file="+keyFile,
		"--service-account-signing-key-file="+keyFile, "--service-cluster-ip-range=10.96.0.0/16",
		"--enable-priority-and-fairness=false", "--v=0")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // gone if this test process dies
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("kube-apiserver log:\n%s", logs)
		}
	})
	cfg := &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", port), BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 200, Burst: 400}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pollUntil(ctx, t, "kube-apiserver /readyz", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("kube-apiserver exited: %v\n%s", err, logs)
		default:
		}
		return dc.RESTClient().Get().AbsPath("/readyz").Do(ctx).Error() == nil
	})
	t.Logf("kube-apiserver ready in %v", time.Since(start).Round(time.Millisecond))
	return cfg
}

// lwsCRD is a CustomResourceDefinition for leaderworkerset.x-k8s.io/v1
// with the API's structural schema for the fields outside the pod
// templates (the templates themselves are validated as PodTemplates).
const lwsCRD = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: leaderworkersets.leaderworkerset.x-k8s.io
spec:
  group: leaderworkerset.x-k8s.io
  names: {kind: LeaderWorkerSet, listKind: LeaderWorkerSetList, plural: leaderworkersets, singular: leaderworkerset, shortNames: [lws]}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            status: {type: object, x-kubernetes-preserve-unknown-fields: true}
            spec:
              type: object
              required: [leaderWorkerTemplate]
              properties:
                replicas: {type: integer, format: int32, minimum: 0}
                startupPolicy: {type: string, enum: [LeaderCreated, LeaderReady]}
                networkConfig:
                  type: object
                  properties:
                    subdomainPolicy: {type: string, enum: [Shared, UniquePerReplica]}
                rolloutStrategy:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
                leaderWorkerTemplate:
                  type: object
                  required: [workerTemplate]
                  properties:
                    size: {type: integer, format: int32, minimum: 1}
                    restartPolicy: {type: string, enum: [Default, RecreateGroupOnPodRestart, RecreateGroupAfterStart, None]}
                    subGroupPolicy:
                      type: object
                      properties:
                        subGroupPolicyType: {type: string, enum: [LeaderWorker, LeaderExcluded]}
                        subGroupSize: {type: integer, format: int32}
                    leaderTemplate: {type: object, x-kubernetes-preserve-unknown-fields: true}
                    workerTemplate: {type: object, x-kubernetes-preserve-unknown-fields: true}
                    volumeClaimTemplates:
                      type: array
                      items: {type: object, x-kubernetes-preserve-unknown-fields: true}
`
