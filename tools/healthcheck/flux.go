package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/clusterreader"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/engine"
	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/runtime/cel"
	"github.com/fluxcd/pkg/runtime/statusreaders"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/normalize"
	ssautil "github.com/fluxcd/pkg/ssa/utils"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// fluxApply does what kustomize-controller does for a Kustomization with `wait: true`
// (kustomize-controller internal/controller/kustomization_controller.go): reconcile builds an
// ssa.ResourceManager owned by the controller (Owner{Field: "kustomize-controller", Group:
// "kustomize.toolkit.fluxcd.io"}) with a status poller whose custom readers are the Job reader
// and, when spec.healthCheckExprs is set, the CEL reader (getClientAndPoller); apply normalizes
// the objects and calls ApplyAllStaged; checkHealth waits with WaitForSetWithContext on the
// change set minus skipped entries, every 5 s, until spec.timeout, failing fast.
func fluxApply(args []string) int {
	fs := flag.NewFlagSet("flux-apply", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig path")
	timeout := fs.Duration("timeout", 60*time.Second, "the Kustomization's spec.timeout")
	interval := fs.Duration("interval", 5*time.Second, "status poll interval (kustomize-controller: 5s)")
	exprsPath := fs.String("health-check-exprs", "", "YAML list, as the Kustomization's spec.healthCheckExprs")
	name := fs.String("name", "secret-bundles", "the Kustomization's name (owner labels)")
	namespace := fs.String("namespace", "flux-system", "the Kustomization's namespace (owner labels)")
	check(fs.Parse(args))
	report := func(v map[string]any) { check(json.NewEncoder(os.Stdout).Encode(v)) }

	objects, err := ssautil.ReadObjects(os.Stdin)
	check(err)
	k, err := connect(*kubeconfig)
	check(err)
	readers := []engine.StatusReader{statusreaders.NewCustomJobStatusReader(k.mapper)}
	rules := &celEvaluators{}
	if *exprsPath != "" {
		checks, err := readExprs(*exprsPath)
		check(err)
		ctor, err := cel.NewStatusReader(checks)
		check(err)
		readers = append(readers, ctor(k.mapper))
		rules, err = loadCEL(*exprsPath)
		check(err)
	}
	// kustomize-controller's default: the DisableStatusPollerCache feature gate is on, so the
	// poller reads the cluster directly.
	poller := polling.NewStatusPoller(k.client, k.mapper, polling.Options{
		CustomStatusReaders:  readers,
		ClusterReaderFactory: engine.ClusterReaderFactoryFunc(clusterreader.NewDirectClusterReader),
	})
	manager := ssa.NewResourceManager(k.client, poller, ssa.Owner{
		Field: "kustomize-controller",
		Group: "kustomize.toolkit.fluxcd.io",
	})
	manager.SetOwnerLabels(objects, *name, *namespace)

	ctx := context.Background()
	start := time.Now()
	check(normalize.UnstructuredList(objects))
	changeSet, err := manager.ApplyAllStaged(ctx, objects, ssa.DefaultApplyOptions())
	if err != nil {
		report(map[string]any{"phase": "apply", "ok": false, "error": err.Error(), "seconds": since(start)})
		return 1
	}
	report(map[string]any{"phase": "apply", "ok": true, "changes": changeSet.ToMap(), "seconds": since(start)})

	toCheck := ssa.NewChangeSet()
	for _, e := range changeSet.Entries {
		if e.Action != ssa.SkippedAction {
			toCheck.Add(e)
		}
	}
	waitStart := time.Now()
	err = manager.WaitForSetWithContext(ctx, toCheck.ToObjMetadataSet(), ssa.WaitOptions{
		Interval: *interval,
		Timeout:  *timeout,
		FailFast: true,
	})
	res := map[string]any{"phase": "wait", "ok": err == nil, "seconds": since(waitStart), "total": since(start)}
	if err != nil {
		res["error"] = err.Error()
	}
	res["status"] = statuses(ctx, k, rules, toCheck)
	report(res)
	if err != nil {
		return 1
	}
	return 0
}

// statuses reads each object once more after the wait and reports the status the same rules
// give it now (a record of what the wait ended on).
func statuses(ctx context.Context, k *kube, rules *celEvaluators, set *ssa.ChangeSet) map[string]string {
	out := map[string]string{}
	for _, id := range set.ToObjMetadataSet() {
		u := &unstructured.Unstructured{}
		m, err := k.mapper.RESTMapping(id.GroupKind)
		if err != nil {
			out[ssautil.FmtObjMetadata(id)] = err.Error()
			continue
		}
		u.SetGroupVersionKind(m.GroupVersionKind)
		if err := k.client.Get(ctx, client.ObjectKey{Namespace: id.Namespace, Name: id.Name}, u); err != nil {
			out[ssautil.FmtObjMetadata(id)] = err.Error()
			continue
		}
		res, err := rules.evaluate(ctx, u)
		if err != nil {
			out[ssautil.FmtObjMetadata(id)] = err.Error()
			continue
		}
		msg := res.Message
		if msg == "" {
			msg = readyCondition(u)
		}
		out[ssautil.FmtObjMetadata(id)] = res.Status.String() + ": " + msg
	}
	return out
}

// readyCondition is the object's Ready condition as "status reason: message", if it has one.
func readyCondition(u *unstructured.Unstructured) string {
	conditions, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conditions {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			return fmt.Sprintf("Ready=%v %v: %v", m["status"], m["reason"], m["message"])
		}
	}
	return ""
}

func since(t time.Time) float64 {
	return time.Since(t).Round(time.Millisecond).Seconds()
}

// readExprs reads a YAML list shaped like a Kustomization's spec.healthCheckExprs.
func readExprs(path string) ([]kustomize.CustomHealthCheck, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var checks []kustomize.CustomHealthCheck
	if err := yaml.UnmarshalStrict(data, &checks); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return checks, nil
}

// celEvaluators evaluates objects offline with the CEL rules kustomize-controller's CEL status
// reader applies (fluxcd/pkg/runtime/cel StatusEvaluator), keyed by GroupKind.
type celEvaluators map[schema.GroupKind]*cel.StatusEvaluator

func loadCEL(path string) (*celEvaluators, error) {
	checks, err := readExprs(path)
	if err != nil {
		return nil, err
	}
	m := celEvaluators{}
	for _, c := range checks {
		e, err := cel.NewStatusEvaluator(&c.HealthCheckExpressions)
		if err != nil {
			return nil, err
		}
		m[schema.FromAPIVersionAndKind(c.APIVersion, c.Kind).GroupKind()] = e
	}
	return &m, nil
}

func (m *celEvaluators) evaluate(ctx context.Context, u *unstructured.Unstructured) (*status.Result, error) {
	e, ok := (*m)[u.GroupVersionKind().GroupKind()]
	if !ok {
		return status.Compute(u)
	}
	return e.Evaluate(ctx, u)
}
