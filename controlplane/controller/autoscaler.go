package controller

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Autoscaling defaults for an Autoscale's zero fields.
const (
	DefaultTargetConcurrency = 10
	DefaultIdle              = 5 * time.Minute
	autoscalePeriod          = 500 * time.Millisecond
)

// autoscaler sets the replica count of autoscaled functions from the load
// the gateways report (gateway.LoadPrefix): up as soon as the requests in
// flight exceed the target per replica, down to the minimum (zero, if so
// set) after the idle period without requests. Scaling from zero is the
// gateway's: it holds the request and asks for a replica. The autoscaler
// runs on the leader only, beside the controller.
type autoscaler struct {
	st    *store.Store
	cache *cache.Cache
	// kv is what it writes through: fenced on the leadership, as the
	// controller's writes are, so that a deposed leader scales nothing.
	kv     clientv3.KV
	log    *slog.Logger
	events *events.Recorder
	now    func() time.Time
}

// Start runs a pass every autoscalePeriod until ctx is done.
func (a *autoscaler) Start(ctx context.Context) error {
	t := time.NewTicker(autoscalePeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := a.pass(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("autoscaler pass failed; retrying", "err", err)
		}
	}
}

// pass looks at every autoscaled function (the cache's index of
// functions: the cost is the functions, not the cluster).
func (a *autoscaler) pass(ctx context.Context) error {
	type function struct {
		wl    store.Versioned[*v1.Workload]
		loads []*v1.FunctionLoad
	}
	var fns []function
	a.cache.Read(func(r cache.Reader) {
		for _, w := range r.Functions() {
			if w.Value.GetSpec().GetAutoscale().GetMaxReplicas() < 1 {
				continue
			}
			fns = append(fns, function{store.Versioned[*v1.Workload]{Name: w.Value.GetName(), Value: w.Value, ModRevision: w.ModRevision}, r.Loads(w.Value.GetName())})
		}
	})
	for _, fn := range fns {
		wl := fn.wl
		spec := wl.Value.GetSpec()
		want, reason, why := decideScale(wl.Value, fn.loads, a.now())
		if want == spec.GetReplicas() {
			continue
		}
		next := proto.Clone(wl.Value).(*v1.Workload)
		next.Spec.Replicas = want
		next.UpdatedUnixNano = a.now().UnixNano()
		put, err := a.st.Workloads.PutOp(wl.Name, next)
		if err != nil {
			return err
		}
		if lost, err := store.Txn(ctx, a.kv, []clientv3.Cmp{a.st.Workloads.Unchanged(wl.Name, wl.ModRevision)}, []clientv3.Op{put}); err != nil {
			return err
		} else if lost > 0 {
			continue // changed meanwhile (or leadership lost): the next pass sees it
		}
		msg := fmt.Sprintf("replicas %d -> %d: %s", spec.GetReplicas(), want, why)
		a.log.Info("autoscaled", "workload", wl.Name, "reason", reason, "message", msg)
		if err := a.events.Record(ctx, "workload/"+wl.Name, reason, "%s", msg); err != nil {
			a.log.Debug("recording an event failed", "err", err)
		}
	}
	return nil
}

// decideScale is the autoscaling rule, for one function: the replica count
// it should have, and why (an event reason and message) if that differs.
func decideScale(wl *v1.Workload, loads []*v1.FunctionLoad, now time.Time) (int32, string, string) {
	spec := wl.GetSpec()
	as := spec.GetAutoscale()
	lo, hi, cur := as.GetMinReplicas(), as.GetMaxReplicas(), spec.GetReplicas()
	target := int64(as.GetTargetConcurrency())
	if target <= 0 {
		target = DefaultTargetConcurrency
	}
	idle := time.Duration(as.GetIdleMs()) * time.Millisecond
	if idle <= 0 {
		idle = DefaultIdle
	}
	var inFlight int64
	updated := time.Unix(0, wl.GetUpdatedUnixNano())
	active := updated // a deploy or a scaling counts as activity
	for _, l := range loads {
		// A report's peak counts only if a request came after the latest
		// change of the count: a peak from before it was the reason for
		// that change, or is older than a person's `scale` and must not
		// undo it.
		n := l.GetInFlight()
		t := time.Unix(0, l.GetLastRequestUnixNano())
		if t.After(updated) {
			n = max(n, l.GetPeakInFlight())
		}
		inFlight += n
		if t.After(active) {
			active = t
		}
	}
	need := int32((inFlight + target - 1) / target)
	switch {
	case cur < lo:
		return lo, "ScaledUp", fmt.Sprintf("below the minimum of %d", lo)
	case cur > hi:
		return hi, "ScaledDown", fmt.Sprintf("above the maximum of %d", hi)
	case need > cur && cur < hi:
		want := min(need, hi)
		return want, "ScaledUp", fmt.Sprintf("%d requests in flight, target %d per replica", inFlight, target)
	case inFlight == 0 && cur > lo && now.Sub(active) >= idle:
		reason := "ScaledDown"
		if lo == 0 {
			reason = "ScaledToZero"
		}
		return lo, reason, fmt.Sprintf("no requests for %s", idle)
	case need < cur && inFlight > 0 && now.Sub(time.Unix(0, wl.GetUpdatedUnixNano())) >= idle:
		want := max(need, lo, 1)
		return want, "ScaledDown", fmt.Sprintf("%d requests in flight, target %d per replica", inFlight, target)
	}
	return cur, "", ""
}
