// Command healthcheck evaluates SecretBundles with the real rules of Argo CD and Flux.
//
//	healthcheck SCRIPT.lua [--health-check-exprs FILE] < objects.json
//	    For each object (a JSON array): the Argo CD health the Lua script gives it, the kstatus
//	    status Flux computes by default, and, with FILE, the status under Flux's CEL
//	    healthCheckExprs.
//	healthcheck flux-apply --kubeconfig K [--timeout 60s] [--health-check-exprs FILE] < manifests.yaml
//	    What kustomize-controller does for `wait: true` (see flux.go).
//	healthcheck argo-sync --kubeconfig K --lua SCRIPT.lua [--timeout 120s] < manifests.yaml
//	    Argo CD's sync-wave rule (see argo.go).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

type result struct {
	Name          string `json:"name"`
	ArgoStatus    string `json:"argoStatus"`
	ArgoMessage   string `json:"argoMessage"`
	KstatusStatus string `json:"kstatus"`
	KstatusMsg    string `json:"kstatusMessage"`
	FluxCEL       string `json:"fluxCel,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "flux-apply":
		os.Exit(fluxApply(os.Args[2:]))
	case "argo-sync":
		os.Exit(argoSync(os.Args[2:]))
	default:
		evaluate(os.Args[1], os.Args[2:])
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: healthcheck SCRIPT.lua [--health-check-exprs FILE] < objects.json
       healthcheck flux-apply --kubeconfig K [--timeout 60s] [--health-check-exprs FILE] < manifests.yaml
       healthcheck argo-sync --kubeconfig K --lua SCRIPT.lua [--timeout 120s] < manifests.yaml`)
	os.Exit(2)
}

func evaluate(scriptPath string, args []string) {
	fs := flag.NewFlagSet("healthcheck", flag.ExitOnError)
	exprsPath := fs.String("health-check-exprs", "", "YAML list of Flux healthCheckExprs")
	check(fs.Parse(args))
	if fs.NArg() != 0 {
		usage()
	}
	script, err := os.ReadFile(scriptPath)
	check(err)
	var cel *celEvaluators
	if *exprsPath != "" {
		cel, err = loadCEL(*exprsPath)
		check(err)
	}
	input, err := io.ReadAll(os.Stdin)
	check(err)
	// apimachinery's decoder keeps integers as int64, as unstructured objects require.
	var objects []map[string]any
	check(utiljson.Unmarshal(input, &objects))
	out := []result{}
	for _, obj := range objects {
		u := &unstructured.Unstructured{Object: obj}
		r := result{Name: u.GetName()}
		h, err := runHealthLua(string(script), obj)
		check(err)
		r.ArgoStatus, r.ArgoMessage = h.Status, h.Message
		res, err := status.Compute(u)
		check(err)
		r.KstatusStatus, r.KstatusMsg = res.Status.String(), res.Message
		if cel != nil {
			res, err := cel.evaluate(context.Background(), u)
			if err != nil {
				r.FluxCEL = "Error: " + err.Error()
			} else {
				r.FluxCEL = res.Status.String()
			}
		}
		out = append(out, r)
	}
	check(json.NewEncoder(os.Stdout).Encode(out))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
