package controller

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/canary"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Canary rollouts (docs/rollouts.md): a new generation of an HTTP function
// whose spec has a canary runs as ceil(percent × replicas) canary replicas
// beside the old ones, and the gateway sends it that percentage of the
// traffic, until the generation is promoted (Workload.promoted_generation):
// by 'rollout promote', or by the controller once every canary replica has
// been available for the spec's canary duration. Then the rolling update
// goes on as usual. A rollback is written promoted: it never waits.

// canaryStep is one pass's decision for a workload with instances of an
// older generation while its generation waits for promotion (held false
// otherwise, and the rolling update decides): the canary replicas are
// created, extra ones go, and up to replicas old instances stay to serve
// the rest of the traffic, except those of a generation newer than the
// promoted one (a canary a newer generation replaced before it was
// promoted).
func canaryStep(wl *v1.Workload, current, old []store.Versioned[*v1.Instance], w *world) (remove []store.Versioned[*v1.Instance], create int, held bool) {
	replicas := int(wl.GetSpec().GetReplicas())
	if !canary.Unpromoted(wl) || replicas == 0 {
		return nil, 0, false // scaled to zero: everything goes
	}
	want := canary.Replicas(canary.Percent(wl), replicas)
	if len(current) > want {
		current = slices.Clone(current)
		sortForRemoval(current, w)
		remove = append(remove, current[:len(current)-want]...)
		current = current[len(current)-want:]
	}
	var stable []store.Versioned[*v1.Instance]
	for _, inst := range old {
		if p := wl.GetPromotedGeneration(); p > 0 && inst.Value.GetGeneration() > p {
			remove = append(remove, inst)
		} else {
			stable = append(stable, inst)
		}
	}
	if len(stable) > replicas {
		// Scaled down during the canary: the old ones beyond replicas go.
		sortForRemoval(stable, w)
		remove = append(remove, stable[:len(stable)-replicas]...)
	}
	return remove, want - len(current), true
}

// sortForRemoval puts the instances that help least first (removalRank).
func sortForRemoval(insts []store.Versioned[*v1.Instance], w *world) {
	sort.SliceStable(insts, func(i, j int) bool {
		ci, ti := removalRank(insts[i].Value, w)
		cj, tj := removalRank(insts[j].Value, w)
		return ci < cj || ci == cj && ti > tj
	})
}

// promoteAt is when a canary with a duration promotes itself: its
// duration after the moment the canary replicas were all available (the
// latest of the first `want` to become so); ok is false while fewer than
// want are available, or when it has no duration or is not held.
func (c *controller) promoteAt(wl *v1.Workload, insts []store.Versioned[*v1.Instance], w *world) (at time.Time, ok bool) {
	d := time.Duration(wl.GetSpec().GetCanaryDurationMs()) * time.Millisecond
	if !canary.Unpromoted(wl) || d <= 0 {
		return time.Time{}, false
	}
	var since []time.Time
	older := false
	for _, inst := range insts {
		if inst.Value.GetGeneration() != wl.GetGeneration() {
			older = true
		} else if t, ok := c.availableSince(inst.Value, w); ok {
			since = append(since, t)
		}
	}
	want := canary.Replicas(canary.Percent(wl), int(wl.GetSpec().GetReplicas()))
	if !older || want == 0 || len(since) < want {
		return time.Time{}, false
	}
	slices.SortFunc(since, func(a, b time.Time) int { return a.Compare(b) })
	return since[want-1].Add(d), true
}

// availableSince is when an instance became available for a rollout (as
// this controller has watched it), if it is.
func (c *controller) availableSince(inst *v1.Instance, w *world) (time.Time, bool) {
	if !c.available(inst, w) {
		return time.Time{}, false
	}
	st := w.statuses[inst.GetId()]
	// When available needs no mark (Succeeded, or no min-ready): available
	// from the first reconcile that sees it so.
	m := c.readyMark(inst, st)
	if st.GetState() == v1.InstanceState_INSTANCE_STATE_SUCCEEDED || c.minReady <= 0 {
		return m.since, true
	}
	return m.since.Add(c.minReady), true
}

// canaryPromotion promotes a workload's canary once it has been available
// for its duration, through the fenced KV and guarded on the workload as
// read; until then, the controller is woken when that time comes.
func (c *controller) canaryPromotion(ctx context.Context, wl store.Versioned[*v1.Workload], insts []store.Versioned[*v1.Instance], w *world) (bool, error) {
	at, ok := c.promoteAt(wl.Value, insts, w)
	if !ok {
		return false, nil
	}
	if time.Now().Before(at) {
		if c.wake.IsZero() || at.Before(c.wake) {
			c.wake = at
		}
		return false, nil
	}
	next := proto.Clone(wl.Value).(*v1.Workload)
	next.PromotedGeneration = next.GetGeneration()
	put, err := c.st.Workloads.PutOp(wl.Name, next)
	if err != nil {
		return false, err
	}
	resp, err := c.kv.Txn(ctx).If(c.st.Workloads.Unchanged(wl.Name, wl.ModRevision)).Then(put).Commit()
	if err != nil {
		return false, err
	}
	if !resp.Succeeded {
		return false, fmt.Errorf("promoting the canary of %s lost a race; will retry", wl.Name)
	}
	d := time.Duration(wl.Value.GetSpec().GetCanaryDurationMs()) * time.Millisecond
	c.log.Info("canary promoted", "workload", wl.Name, "generation", next.GetGeneration())
	c.note(events.Workload(wl.Name), "CanaryPromoted", "generation %d promoted: its canary (%s of the traffic) was available for %s",
		next.GetGeneration(), wl.Value.GetSpec().GetCanary(), d)
	return true, nil
}
