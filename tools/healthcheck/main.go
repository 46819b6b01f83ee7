// Command healthcheck reads Kubernetes objects (a JSON array) on stdin and prints, for each,
// the Argo CD health that a Lua health script gives it and the kstatus status Flux computes.
//
//	healthcheck deploy/argocd/secretbundle-health.lua < objects.json
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Name          string `json:"name"`
	ArgoStatus    string `json:"argoStatus"`
	ArgoMessage   string `json:"argoMessage"`
	KstatusStatus string `json:"kstatus"`
	KstatusMsg    string `json:"kstatusMessage"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: healthcheck SCRIPT.lua < objects.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	check(err)
	input, err := io.ReadAll(os.Stdin)
	check(err)
	// apimachinery's decoder keeps integers as int64, as unstructured objects require.
	var objects []map[string]any
	check(utiljson.Unmarshal(input, &objects))
	var out []result
	for _, obj := range objects {
		r := result{Name: fmt.Sprint(obj["metadata"].(map[string]any)["name"])}
		r.ArgoStatus, r.ArgoMessage = argo(string(script), obj)
		res, err := status.Compute(&unstructured.Unstructured{Object: obj})
		check(err)
		r.KstatusStatus, r.KstatusMsg = res.Status.String(), res.Message
		out = append(out, r)
	}
	check(json.NewEncoder(os.Stdout).Encode(out))
}

// argo runs the script as Argo CD does: the object is the global `obj`, the script returns a
// table with `status` and `message`.
func argo(script string, obj map[string]any) (string, string) {
	L := lua.NewState(lua.Options{SkipOpenLibs: false})
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	check(L.DoString(script))
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		check(fmt.Errorf("script returned %s, not a table", L.Get(-1).Type()))
	}
	return ret.RawGetString("status").String(), ret.RawGetString("message").String()
}

func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := L.NewTable()
		for k, x := range v {
			t.RawSetString(k, toLua(L, x))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, x := range v {
			t.Append(toLua(L, x))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	default:
		return lua.LString(fmt.Sprint(v))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
