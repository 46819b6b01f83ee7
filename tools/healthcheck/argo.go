package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	ssautil "github.com/fluxcd/pkg/ssa/utils"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
)

// Argo CD's sync of one Application, reduced to what decides when it moves on. Followed from
// gitops-engine pkg/sync/sync_context.go (now argo-cd/gitops-engine), syncContext.Sync:
//   - every task is first applied as a dry run; a failure fails the sync before anything is applied;
//   - tasks run by phase and wave (syncwaves.Wave: the argocd.argoproj.io/sync-wave annotation,
//     default 0), lowest first;
//   - each pass updates the health of the tasks still running from their live objects
//     (health.GetResourceHealth with the argocd-cm override): Healthy, or no health at all,
//     completes a task successfully; Degraded completes it unsuccessfully; Progressing,
//     Suspended and Missing keep it running, and so does a health check that errors;
//   - while the sync has several waves and any task is running, the pass ends and waits;
//   - a task that completed unsuccessfully fails the sync ("one or more synchronization tasks
//     completed unsuccessfully"), as does an apply error;
//   - otherwise the next wave is applied; after a wave that is not the last, the controller's
//     SyncWaveHook sleeps 2 s (argo-cd controller/sync.go delayBetweenSyncWaves); after the last
//     wave the sync succeeds at once ("successfully synced (all tasks run)"), even if those
//     objects degrade later.
// The Application's health is then the worst health of its resources (argo-cd
// controller/health.go setApplicationHealth, ordered by gitops-engine health.IsWorse): what an
// app-of-apps parent and alerts wait on.

type task struct {
	obj    *unstructured.Unstructured
	wave   int
	state  string // pending, running, succeeded, failed
	health health
}

func (t *task) key() string {
	if ns := t.obj.GetNamespace(); ns != "" {
		return t.obj.GetKind() + "/" + ns + "/" + t.obj.GetName()
	}
	return t.obj.GetKind() + "/" + t.obj.GetName()
}

// noHealthKinds have no health in Argo CD (neither gitops-engine's GetHealthCheckFunc nor a
// resource_customizations script), so they complete as soon as they are applied. Other kinds
// are refused rather than judged by a rule this tool does not carry.
var noHealthKinds = map[schema.GroupKind]bool{
	{Kind: "Namespace"}: true, {Kind: "ConfigMap"}: true, {Kind: "Secret"}: true,
	{Kind: "ServiceAccount"}: true, {Kind: "LimitRange"}: true, {Kind: "ResourceQuota"}: true,
	{Group: "rbac.authorization.k8s.io", Kind: "Role"}:               true,
	{Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"}:        true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}:        true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}: true,
}

var secretBundle = schema.GroupKind{Group: "secrets.ameide.io", Kind: "SecretBundle"}

// healthOrder is gitops-engine pkg/health healthOrder, most healthy first.
var healthOrder = []string{"Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown"}

func worse(current, next string) bool {
	rank := func(s string) int {
		for i, h := range healthOrder {
			if h == s {
				return i
			}
		}
		return 0
	}
	return rank(next) > rank(current)
}

type argo struct {
	dyn    dynamic.Interface
	k      *kube
	script string
	start  time.Time
}

func argoSync(args []string) int {
	fs := flag.NewFlagSet("argo-sync", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig path")
	luaPath := fs.String("lua", "", "health Lua for secrets.ameide.io/SecretBundle (argocd-cm override)")
	timeout := fs.Duration("timeout", 120*time.Second, "give up after this long")
	poll := fs.Duration("poll", time.Second, "how often a sync pass runs (Argo CD: on every app refresh)")
	waveDelay := fs.Duration("wave-delay", 2*time.Second, "ARGOCD_SYNC_WAVE_DELAY")
	appHealth := fs.Bool("wait-app-healthy", true, "after the sync, wait until the Application is Healthy")
	check(fs.Parse(args))
	script, err := os.ReadFile(*luaPath)
	check(err)
	objects, err := ssautil.ReadObjects(os.Stdin)
	check(err)
	k, err := connect(*kubeconfig)
	check(err)
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	check(err)
	dyn, err := dynamic.NewForConfig(cfg)
	check(err)
	a := &argo{dyn: dyn, k: k, script: string(script), start: time.Now()}

	var tasks []*task
	for _, o := range objects {
		gk := o.GroupVersionKind().GroupKind()
		if gk != secretBundle && !noHealthKinds[gk] {
			check(fmt.Errorf("%s: no Argo CD health rule for %s known to this tool", o.GetName(), gk))
		}
		wave := 0
		if v, ok := o.GetAnnotations()["argocd.argoproj.io/sync-wave"]; ok {
			if n, err := strconv.Atoi(v); err == nil {
				wave = n
			}
		}
		tasks = append(tasks, &task{obj: o, wave: wave, state: "pending"})
	}
	sort.SliceStable(tasks, func(i, j int) bool { return tasks[i].wave < tasks[j].wave })
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	ok := a.sync(ctx, tasks, *poll, *waveDelay)
	if ok && *appHealth {
		ok = a.waitAppHealthy(ctx, tasks, *poll)
	}
	if !ok {
		return 1
	}
	return 0
}

func (a *argo) report(v map[string]any) {
	v["seconds"] = since(a.start)
	check(json.NewEncoder(os.Stdout).Encode(v))
}

func (a *argo) sync(ctx context.Context, tasks []*task, poll, waveDelay time.Duration) bool {
	for _, t := range tasks {
		if err := a.apply(ctx, t.obj, true); err != nil {
			a.report(map[string]any{"event": "sync", "phase": "Failed", "message": "dry run of " + t.key() + ": " + err.Error()})
			return false
		}
	}
	multiStep := len(tasks) > 0 && tasks[0].wave != tasks[len(tasks)-1].wave
	waveStart := time.Now()
	for {
		var running []*task
		for _, t := range tasks {
			if t.state != "running" {
				continue
			}
			h, err := a.liveHealth(ctx, t)
			if err != nil {
				t.state, t.health = "failed", health{Status: "Missing", Message: err.Error()}
				continue
			}
			if h != t.health {
				t.health = h
				a.report(map[string]any{"event": "health", "wave": t.wave, "resource": t.key(), "status": h.Status, "message": h.Message})
			}
			switch h.Status {
			case "", "Healthy":
				t.state = "succeeded"
			case "Degraded":
				t.state = "failed"
			default:
				running = append(running, t)
			}
		}
		if multiStep && len(running) > 0 {
			if !sleep(ctx, poll) {
				a.report(map[string]any{"event": "sync", "phase": "Running", "message": "timed out waiting for the healthy state of " + strings.Join(keys(running), ", ")})
				return false
			}
			continue
		}
		var failed, pending []*task
		for _, t := range tasks {
			switch t.state {
			case "failed":
				failed = append(failed, t)
			case "pending":
				pending = append(pending, t)
			}
		}
		if len(failed) > 0 {
			a.report(map[string]any{"event": "sync", "phase": "Failed", "message": "one or more synchronization tasks completed unsuccessfully: " + strings.Join(keys(failed), ", "), "health": healths(failed)})
			return false
		}
		if prev := lastWave(tasks, pending); prev != nil {
			a.report(map[string]any{"event": "wave-done", "wave": *prev, "waited": since(waveStart), "health": healths(waveTasks(tasks, *prev))})
		}
		if len(pending) == 0 {
			a.report(map[string]any{"event": "sync", "phase": "Succeeded", "message": "successfully synced (no more tasks)"})
			return true
		}
		wave := pending[0].wave
		current := waveTasks(pending, wave)
		for _, t := range current {
			if err := a.apply(ctx, t.obj, false); err != nil {
				a.report(map[string]any{"event": "sync", "phase": "Failed", "message": "one or more objects failed to apply: " + t.key() + ": " + err.Error()})
				return false
			}
			t.state = "running"
		}
		waveStart = time.Now()
		a.report(map[string]any{"event": "wave-applied", "wave": wave, "resources": keys(current)})
		if len(current) == len(pending) {
			a.report(map[string]any{"event": "sync", "phase": "Succeeded", "message": "successfully synced (all tasks run)"})
			return true
		}
		if !sleep(ctx, waveDelay) {
			return false
		}
	}
}

// waitAppHealthy waits until the Application's aggregated health is Healthy.
func (a *argo) waitAppHealthy(ctx context.Context, tasks []*task, poll time.Duration) bool {
	last := ""
	for {
		app := "Healthy"
		for _, t := range tasks {
			h, err := a.liveHealth(ctx, t)
			if err != nil {
				h = health{Status: "Missing", Message: err.Error()}
			}
			t.health = h
			if h.Status != "" && worse(app, h.Status) {
				app = h.Status
			}
		}
		if app != last {
			last = app
			a.report(map[string]any{"event": "app-health", "status": app, "health": healths(tasks)})
		}
		if app == "Healthy" {
			return true
		}
		if !sleep(ctx, poll) {
			a.report(map[string]any{"event": "app-health", "status": app, "message": "timed out waiting for the Application to be Healthy", "health": healths(tasks)})
			return false
		}
	}
}

// liveHealth is gitops-engine health.GetResourceHealth on the live object: Progressing while
// it is being deleted, the Lua override for SecretBundles, no health for the rest.
func (a *argo) liveHealth(ctx context.Context, t *task) (health, error) {
	live, err := a.resource(t.obj).Get(ctx, t.obj.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return health{}, fmt.Errorf("Resource %s is missing, it might have been deleted", t.key())
	}
	if err != nil {
		return health{}, err
	}
	if live.GetDeletionTimestamp() != nil {
		return health{Status: "Progressing", Message: "Pending deletion"}, nil
	}
	if live.GroupVersionKind().GroupKind() != secretBundle {
		return health{}, nil
	}
	h, err := runHealthLua(a.script, live.Object)
	if err != nil {
		// GetResourceHealth reports Unknown; Sync leaves the task running.
		return health{Status: "Unknown", Message: err.Error()}, nil
	}
	return h, nil
}

// apply is a server-side apply with Argo CD's field manager (ServerSideApply=true sync option).
func (a *argo) apply(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	opts := metav1.ApplyOptions{FieldManager: "argocd-controller"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err := a.resource(obj).Apply(ctx, obj.GetName(), obj, opts)
	return err
}

func (a *argo) resource(obj *unstructured.Unstructured) dynamic.ResourceInterface {
	gvk := obj.GroupVersionKind()
	m, err := a.k.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	check(err)
	r := a.dyn.Resource(m.Resource)
	if ns := obj.GetNamespace(); ns != "" {
		return r.Namespace(ns)
	}
	return r
}

func waveTasks(tasks []*task, wave int) []*task {
	var out []*task
	for _, t := range tasks {
		if t.wave == wave {
			out = append(out, t)
		}
	}
	return out
}

// lastWave is the wave that was applied last, if it has just finished (nothing of it runs).
func lastWave(tasks, pending []*task) *int {
	var w *int
	for _, t := range tasks {
		if t.state != "pending" && (len(pending) == 0 || t.wave < pending[0].wave) {
			w = &t.wave
		}
	}
	return w
}

func keys(tasks []*task) []string {
	out := make([]string, 0, len(tasks))
	for _, t := range tasks {
		out = append(out, t.key())
	}
	return out
}

func healths(tasks []*task) map[string]health {
	out := map[string]health{}
	for _, t := range tasks {
		out[t.key()] = t.health
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
