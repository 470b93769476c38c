package gateway

import (
	"context"
	"net/url"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Reserved are the control plane's own HTTP paths, which no route may
// shadow.
var Reserved = []string{"/healthz", "/readyz", "/metrics"}

// CheckRouteIn refuses a trigger that another workload's trigger already
// claims (same route, same host), or that shadows a reserved path. name is
// the workload being applied: its own current trigger is no conflict. It
// reads the member's cache (one look-up of the route's holder); the claim
// written with the workload (ClaimRoute) settles a race with another
// apply.
func CheckRouteIn(r cache.Reader, name string, trig *v1.HttpTrigger) error {
	if trig == nil {
		return nil
	}
	if err := checkReserved(trig); err != nil {
		return err
	}
	holder, ok := r.RouteHolder(trig)
	if !ok || holder == name {
		return nil
	}
	if wl, ok := r.Workload(holder); ok && httptrigger.SameRoute(wl.Value.GetSpec().GetHttp(), trig) {
		return routeTaken(trig, holder)
	}
	return nil
}

// checkReserved refuses a trigger that shadows one of Reserved.
func checkReserved(trig *v1.HttpTrigger) error {
	route := httptrigger.NormalizeRoute(trig.GetRoute())
	for _, p := range Reserved {
		if httptrigger.Matches(route, p) {
			return errdefs.Invalidf("HTTP route %s would shadow the control plane's %s: choose another route", route, p)
		}
	}
	return nil
}

func routeTaken(trig *v1.HttpTrigger, holder string) error {
	return errdefs.Preconditionf("HTTP route %s is already served by workload %s: choose another --route or --host, or delete %s first",
		httptrigger.Describe(trig), holder, holder)
}

// RoutesPrefix holds one claim per route and host
// (RoutesPrefix/<host>/<route>, both query-escaped; the value is the
// workload's name). The claim is written in the transaction that writes
// the workload, on the condition that nobody else holds it, so that two
// deploys of one route at the same moment cannot both succeed: CheckRoute
// alone reads, then the write follows.
const RoutesPrefix = store.RoutesPrefix

// ClaimKey is the key of a trigger's route claim.
func ClaimKey(t *v1.HttpTrigger) string {
	return RoutesPrefix + url.QueryEscape(strings.ToLower(t.GetHost())) + "/" + url.QueryEscape(httptrigger.NormalizeRoute(t.GetRoute()))
}

// ClaimRoute returns what the transaction writing workload name with
// trigger trig (prev: its trigger until now) must compare and do to hold
// trig's route: claim it if free, keep it if name holds it, take it over
// from a workload that no longer has it, and release prev's when the route
// changes. A route held by another workload that has it is refused as
// CheckRoute refuses it.
func ClaimRoute(ctx context.Context, st *store.Store, name string, trig, prev *v1.HttpTrigger) ([]clientv3.Cmp, []clientv3.Op, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	if prev != nil && prev.GetRoute() != "" && (trig == nil || ClaimKey(prev) != ClaimKey(trig)) {
		ops = append(ops, ReleaseRouteOp(name, prev))
	}
	if trig == nil || trig.GetRoute() == "" {
		return cmps, ops, nil
	}
	holds := func(spec *v1.WorkloadSpec) bool { return httptrigger.SameRoute(spec.GetHttp(), trig) }
	taken := func(holder string) error { return routeTaken(trig, holder) }
	c, o, err := store.Claim(ctx, st, ClaimKey(trig), name, "route "+httptrigger.Describe(trig), holds, taken)
	if err != nil {
		return nil, nil, err
	}
	return append(cmps, c...), append(ops, o...), nil
}

// ReleaseRouteOp deletes trig's route claim if name holds it, for the
// transaction that deletes the workload or changes its route.
func ReleaseRouteOp(name string, trig *v1.HttpTrigger) clientv3.Op {
	return store.ReleaseClaimOp(ClaimKey(trig), name)
}
