package main

import (
	"context"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// health is Argo CD's verdict on one resource (gitops-engine pkg/health HealthStatus).
type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// runHealthLua runs a health script the way Argo CD runs a resource customization from argocd-cm
// (argo-cd util/lua/lua.go, VM.runLuaWithResourceActionParameters and VM.ExecuteHealthLua):
// standard libraries off (UseOpenLibs defaults to false for argocd-cm scripts) except package,
// base and table, a 1 s deadline, the object as the global `obj`, and a returned table whose
// `status` must be a known health code, otherwise the health is Unknown.
// Argo CD also opens a restricted `os`; the SecretBundle script does not use it.
func runHealthLua(script string, obj map[string]any) (health, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.fn), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return health{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return health{}, err
	}
	ret := L.Get(-1)
	if ret.Type() == lua.LTNil {
		return health{}, nil
	}
	t, ok := ret.(*lua.LTable)
	if !ok {
		return health{}, fmt.Errorf("expect table output from health script, got %s", ret.Type())
	}
	h := health{Status: luaString(t.RawGetString("status")), Message: luaString(t.RawGetString("message"))}
	switch h.Status {
	case "Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing":
		return h, nil
	}
	// argo-cd util/lua/lua.go isValidHealthStatusCode.
	return health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
}

func luaString(v lua.LValue) string {
	if v.Type() == lua.LTNil {
		return ""
	}
	return v.String()
}

// toLua converts a decoded object as Argo CD's decodeValue does (argo-cd util/lua/lua.go).
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := L.CreateTable(0, len(v))
		for k, x := range v {
			t.RawSetH(lua.LString(k), toLua(L, x))
		}
		return t
	case []any:
		t := L.CreateTable(len(v), 0)
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
	case int:
		return lua.LNumber(v)
	default:
		return lua.LNil
	}
}
