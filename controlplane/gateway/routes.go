package gateway

import (
	"context"
	"sort"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Reserved are the control plane's own HTTP paths, which no route may
// shadow.
var Reserved = []string{"/healthz", "/readyz", "/metrics"}

// CheckRoute refuses a trigger that another workload's trigger already
// claims (same route, same host), or that shadows a reserved path. name is
// the workload being applied: its own current trigger is no conflict.
func CheckRoute(ctx context.Context, st *store.Store, name string, trig *v1.HttpTrigger) error {
	if trig == nil {
		return nil
	}
	route := httptrigger.NormalizeRoute(trig.GetRoute())
	for _, p := range Reserved {
		if httptrigger.Matches(route, p) {
			return errdefs.Invalidf("HTTP route %s would shadow the control plane's %s: choose another route", route, p)
		}
	}
	wls, _, err := st.Workloads.List(ctx)
	if err != nil {
		return err
	}
	sort.Slice(wls, func(i, j int) bool { return wls[i].Name < wls[j].Name })
	for _, wl := range wls {
		if wl.Name != name && httptrigger.SameRoute(wl.Value.GetSpec().GetHttp(), trig) {
			return errdefs.Preconditionf("HTTP route %s is already served by workload %s: choose another --route or --host, or delete %s first",
				httptrigger.Describe(trig), wl.Name, wl.Name)
		}
	}
	return nil
}
