package controller

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/gateway"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// rollingStep is one pass's decision for a workload with instances of an
// older generation: which old ones go and how many new ones to create.
// current are the current generation's instances (at most want), ready how
// many of them are ready. Old instances that are not ready go at once
// (they serve no one); ready ones go only while the ready count stays at
// least want-unavailable, those that run another spec than spec first (so
// that a rollback removes the failed revision's instances before those of
// the revision it returns to); new ones are created while the total stays
// at most want+surge. The total counts what still runs: the old instances
// that go stay in it until their nodes have stopped them, as do those
// terminating already (terminate.go), so that no more than want+surge
// ever run at once.
func rollingStep(want, surge, unavailable int, current, ready int, old []store.Versioned[*v1.Instance], spec *v1.WorkloadSpec, w *world) (remove []store.Versioned[*v1.Instance], create int) {
	var oldReady []store.Versioned[*v1.Instance]
	leaving := w.terminating
	for _, inst := range old {
		if isReady(inst.Value, w.statuses[inst.Name], w.alive) {
			oldReady = append(oldReady, inst)
		} else {
			remove = append(remove, inst)
			if !gone(inst.Value, w) && w.alive[inst.Value.GetNode()] {
				leaving++
			}
		}
	}
	// Another spec than the one rolled out goes first; then the oldest
	// generation; within one, the newest instance.
	same := make(map[string]bool, len(oldReady))
	for _, inst := range oldReady {
		same[inst.Name] = workloads.SameRevision(inst.Value.GetSpec(), spec)
	}
	sort.SliceStable(oldReady, func(i, j int) bool {
		a, b := oldReady[i], oldReady[j]
		if same[a.Name] != same[b.Name] {
			return !same[a.Name]
		}
		// state: with per-instance volumes, the old instance of a slot
		// whose replacement is there goes first.
		if ra, rb := w.slotsHeld[a.Value.GetOrdinal()], w.slotsHeld[b.Value.GetOrdinal()]; ra != rb {
			return ra
		}
		gi, gj := a.Value.GetGeneration(), b.Value.GetGeneration()
		return gi < gj || gi == gj && a.Value.GetCreatedUnixNano() > b.Value.GetCreatedUnixNano()
	})
	removable := max(0, min(len(oldReady), ready+len(oldReady)-(want-unavailable)))
	remove = append(remove, oldReady[:removable]...)
	total := current + len(oldReady) + leaving
	create = max(0, min(want-current, want+surge-total))
	return remove, create
}

// healthTransitions records an event when a function replica of a
// workload starts failing its health check (a ready one became
// unhealthy, or a new one reached the failure threshold without ever
// passing) and when it passes again. The first look at a replica only
// takes note.
func (c *controller) healthTransitions(workload string, w *world) {
	if c.unhealthy == nil {
		c.unhealthy = map[string]map[string]bool{}
	}
	prev := c.unhealthy[workload]
	next := map[string]bool{}
	for _, inst := range w.instances {
		st := w.statuses[inst.Name]
		if st == nil || st.GetNode() != inst.Value.GetNode() || inst.Value.GetSpec().GetHttp().GetHealthPath() == "" {
			continue
		}
		failing := st.GetUnhealthy() ||
			st.GetState() == v1.InstanceState_INSTANCE_STATE_STARTING && st.GetHealthFailures() >= httptrigger.HealthFailureThreshold
		next[inst.Name] = failing
		was, known := prev[inst.Name]
		if prev == nil || failing == was || !known && !failing {
			continue
		}
		obj := events.Workload(inst.Value.GetWorkload())
		if failing {
			c.note(obj, "Unhealthy", "instance %s on node %s fails its health check (%d times in a row, last: %s): it gets no traffic until a check passes",
				inst.Name, inst.Value.GetNode(), st.GetHealthFailures(), st.GetHealthMessage())
		} else {
			c.note(obj, "Healthy", "instance %s on node %s passes its health check again", inst.Name, inst.Value.GetNode())
		}
	}
	c.unhealthy[workload] = next
	failing := false
	for _, f := range next {
		failing = failing || f
	}
	if failing {
		c.unhealthyWorkloads.Store(workload, true)
	} else {
		c.unhealthyWorkloads.Delete(workload)
	}
}

// DefaultMinReady is how long a new instance must run before a rolling
// update counts it as available when Config.RolloutMinReady is zero: long
// enough that a module that crashes at start never passes for ready.
const DefaultMinReady = time.Second

// readyMark is when the controller first saw an instance running, in the
// run it is in (a restart starts a new run).
type readyMark struct {
	restarts int32
	started  int64
	since    time.Time
}

// available says whether a new generation's instance counts for a rolling
// update: ready, and Succeeded or running for minReady (as this
// controller has watched it). If it will be available later, the
// controller is woken then.
func (c *controller) available(inst *v1.Instance, w *world) bool {
	st := w.statuses[inst.GetId()]
	if !isReady(inst, st, w.alive) {
		return false
	}
	if st.GetState() == v1.InstanceState_INSTANCE_STATE_SUCCEEDED || c.minReady <= 0 {
		return true
	}
	m := c.readyMark(inst, st)
	at := m.since.Add(c.minReady)
	if !time.Now().Before(at) {
		return true
	}
	if c.wake.IsZero() || at.Before(c.wake) {
		c.wake = at
	}
	return false
}

// readyMark returns when this controller first saw the instance in its
// current run, marking it now if it had not.
func (c *controller) readyMark(inst *v1.Instance, st *v1.InstanceStatus) readyMark {
	if c.readySince == nil {
		c.readySince = map[string]map[string]readyMark{}
	}
	marks := c.readySince[inst.GetWorkload()]
	if marks == nil {
		marks = map[string]readyMark{}
		c.readySince[inst.GetWorkload()] = marks
	}
	m, ok := marks[inst.GetId()]
	if !ok || m.restarts != st.GetRestarts() || m.started != st.GetStartedUnixNano() {
		m = readyMark{restarts: st.GetRestarts(), started: st.GetStartedUnixNano(), since: time.Now()}
		marks[inst.GetId()] = m
	}
	return m
}

// forgetReadySince starts a workload's reconcile: the marks of its
// instances that are gone or no longer ready are dropped.
func (c *controller) forgetReadySince(workload string, w *world) {
	marks := c.readySince[workload]
	if len(marks) == 0 {
		return
	}
	ready := make(map[string]bool, len(w.instances))
	for _, inst := range w.instances {
		ready[inst.Name] = isReady(inst.Value, w.statuses[inst.Name], w.alive)
	}
	for id := range marks {
		if !ready[id] {
			delete(marks, id)
		}
	}
}

// Defaults of the automatic rollback settings (Config).
const (
	DefaultRolloutFailureRestarts = 3
	DefaultProgressDeadline       = 10 * time.Minute
	DefaultRolloutMaxErrorPercent = 10
	// rolloutMinRequests is how many requests a new generation must have
	// answered before its failure rate can roll it back.
	rolloutMinRequests = 20
	// errorRateRecheck is how often a function's rollout is looked at for
	// its failure rate (the gateways report their counts every second).
	errorRateRecheck = time.Second
)

// stuck says how a new generation's instance makes no progress, and when
// that fails its rollout (the progress deadline after the instance was
// created): not placed, placed but never reported by its node, or still
// preparing its module or image. An instance that fails, or fails its
// health checks, makes progress towards the other reasons for a rollback.
func (c *controller) stuck(inst *v1.Instance, st *v1.InstanceStatus, wl *v1.Workload) (string, time.Time) {
	since := inst.GetCreatedUnixNano()
	if since == 0 {
		since = wl.GetUpdatedUnixNano()
	}
	at := time.Unix(0, since).Add(c.progressDeadline)
	switch {
	case inst.GetNode() == "":
		return fmt.Sprintf("was not placed within the progress deadline %s: %s", c.progressDeadline, inst.GetPendingReason()), at
	case st == nil || st.GetNode() != inst.GetNode():
		return fmt.Sprintf("was not started by node %s within the progress deadline %s", inst.GetNode(), c.progressDeadline), at
	case st.GetState() == v1.InstanceState_INSTANCE_STATE_STARTING && st.GetHealthFailures() == 0:
		return fmt.Sprintf("has not started within the progress deadline %s: %s", c.progressDeadline, strings.TrimSpace(st.GetMessage())), at
	}
	return "", time.Time{}
}

// errorRateFailure says why a function's new generation fails too many
// requests, or "": it answered at least rolloutMinRequests through the
// gateways (their latest load reports), failed more than maxPercent of
// them, and more than twice the failure rate of the older generations
// (so that a fault the old one shares, a database down, is not blamed on
// the new one).
func errorRateFailure(generation int64, loads []*v1.FunctionLoad, maxPercent int) string {
	var cur, old v1.GenerationRequests
	for _, l := range loads {
		for gen, n := range l.GetGenerations() {
			switch {
			case gen == generation:
				cur.Requests, cur.Errors = cur.Requests+n.GetRequests(), cur.Errors+n.GetErrors()
			case gen < generation:
				old.Requests, old.Errors = old.Requests+n.GetRequests(), old.Errors+n.GetErrors()
			}
		}
	}
	if maxPercent <= 0 || cur.Requests < rolloutMinRequests {
		return ""
	}
	rate := float64(cur.Errors) / float64(cur.Requests)
	oldRate := 0.0
	if old.Requests >= rolloutMinRequests {
		oldRate = float64(old.Errors) / float64(old.Requests)
	}
	if rate*100 <= float64(maxPercent) || rate <= 2*oldRate {
		return ""
	}
	return fmt.Sprintf("generation %d failed %d of %d requests (%.0f%%, over the limit of %d%%; the older generations: %.0f%%)",
		generation, cur.Errors, cur.Requests, rate*100, maxPercent, oldRate*100)
}

// rolloutFailure says why a workload's rollout has failed, or "": while
// instances of an older generation remain, a function's current
// generation fails too many of its requests (errorRateFailure), or an
// instance of it has restarted failureRestarts times (or failed for good),
// has failed as many health checks in a row (at least the threshold that
// makes a ready replica unhealthy), or has not been placed within the
// progress deadline of the change.
func (c *controller) rolloutFailure(wl *v1.Workload, insts []store.Versioned[*v1.Instance], w *world) string {
	if c.failureRestarts <= 0 && c.progressDeadline <= 0 && c.maxErrorPercent <= 0 {
		return ""
	}
	if !rollingOut(wl, insts) {
		return ""
	}
	if wl.GetSpec().GetHttp() != nil && w.loads != nil {
		if why := errorRateFailure(wl.GetGeneration(), w.loads[wl.GetName()], c.maxErrorPercent); why != "" {
			return why
		}
		// The gateways report every second, and their reports do not
		// wake the controller: look again then.
		if at := time.Now().Add(errorRateRecheck); c.wake.IsZero() || at.Before(c.wake) {
			c.wake = at
		}
	}
	for _, inst := range insts {
		if inst.Value.GetGeneration() != wl.GetGeneration() {
			continue
		}
		st := w.statuses[inst.Name]
		if c.failureRestarts > 0 && st != nil && st.GetNode() == inst.Value.GetNode() {
			failedForGood := st.GetState() == v1.InstanceState_INSTANCE_STATE_FAILED && wl.GetSpec().GetRestart() == v1.RestartPolicy_RESTART_POLICY_NEVER
			if st.GetRestarts() >= int32(c.failureRestarts) || failedForGood {
				why := st.GetReason()
				if st.GetExited() {
					why += fmt.Sprintf(" (exit code %d)", st.GetExitCode())
				}
				return fmt.Sprintf("instance %s crash-loops (%d restarts, last: %s)", inst.Name, st.GetRestarts(), strings.TrimSpace(why))
			}
		}
		if c.failureRestarts > 0 && st != nil && st.GetNode() == inst.Value.GetNode() && st.GetHealthFailures() >= int32(max(c.failureRestarts, httptrigger.HealthFailureThreshold)) {
			return fmt.Sprintf("instance %s fails its health check (%d times in a row, last: %s)", inst.Name, st.GetHealthFailures(), st.GetHealthMessage())
		}
		if c.progressDeadline > 0 {
			if why, at := c.stuck(inst.Value, st, wl); why != "" {
				if !time.Now().Before(at) {
					return "instance " + inst.Name + " " + why
				}
				if c.wake.IsZero() || at.Before(c.wake) {
					c.wake = at
				}
			}
		}
	}
	return ""
}

// autoRollback rolls a workload whose rollout failed back to its previous
// revision, as a new generation with its revision, through the fenced KV
// and guarded on the workload as read. A generation that is itself an
// automatic rollback is never rolled back again (no flip-flop).
func (c *controller) autoRollback(ctx context.Context, wl store.Versioned[*v1.Workload], insts []store.Versioned[*v1.Instance], w *world) (bool, error) {
	reason := c.rolloutFailure(wl.Value, insts, w)
	if reason == "" {
		return false, nil
	}
	revs, err := workloads.ListRevisions(ctx, c.st, wl.Name)
	if err != nil {
		return false, err
	}
	for _, r := range revs {
		if r.GetGeneration() == wl.Value.GetGeneration() && strings.HasPrefix(r.GetChangeCause(), autoRollbackCause) {
			return false, nil
		}
	}
	target, err := workloads.PickRevision(revs, wl.Value, 0)
	if err != nil {
		return false, nil // nothing to go back to
	}
	next := proto.Clone(wl.Value).(*v1.Workload)
	next.Generation++
	next.PromotedGeneration = next.Generation // canary.go: a rollback does not wait
	next.Spec = proto.Clone(target.GetSpec()).(*v1.WorkloadSpec)
	next.Spec.Replicas = wl.Value.GetSpec().GetReplicas()
	next.UpdatedUnixNano = time.Now().UnixNano()
	cause := fmt.Sprintf("%s to revision %d: %s", autoRollbackCause, target.GetGeneration(), reason)
	cmps, ops, err := gateway.ClaimRoute(ctx, c.st, wl.Name, next.GetSpec().GetHttp(), wl.Value.GetSpec().GetHttp())
	if err == nil {
		var pcmps []clientv3.Cmp
		var pops []clientv3.Op
		pcmps, pops, err = workloads.ClaimPort(ctx, c.st, wl.Name, next.GetSpec(), wl.Value.GetSpec()) // services
		cmps, ops = append(cmps, pcmps...), append(ops, pops...)
	}
	if errdefs.IsFailedPrecondition(err) {
		// The revision's route or port went to another workload since:
		// it cannot come back. Said once per generation; the workload's
		// reconcile goes on, and a later one rolls back if it is freed.
		if c.rollbackRefused[wl.Name] != wl.Value.GetGeneration() {
			if c.rollbackRefused == nil {
				c.rollbackRefused = map[string]int64{}
			}
			c.rollbackRefused[wl.Name] = wl.Value.GetGeneration()
			c.note("workload/"+wl.Name, "RollbackRefused", "generation %d failed (%s) but cannot be rolled back to revision %d: %v",
				wl.Value.GetGeneration(), reason, target.GetGeneration(), err)
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	rcmps, rops, err := workloads.RevisionOps(ctx, c.st, c.revisionLimit, next, cause)
	if err != nil {
		return false, err
	}
	put, err := c.st.Workloads.PutOp(wl.Name, next)
	if err != nil {
		return false, err
	}
	cmps = append(append(cmps, rcmps...), c.st.Workloads.Unchanged(wl.Name, wl.ModRevision))
	resp, err := c.kv.Txn(ctx).If(cmps...).Then(append(append(ops, rops...), put)...).Commit()
	if err != nil {
		return false, err
	}
	if !resp.Succeeded {
		return false, fmt.Errorf("rolling back %s lost a race; will retry", wl.Name)
	}
	c.log.Warn("rollout failed; rolled back", "workload", wl.Name, "generation", wl.Value.GetGeneration(), "to", target.GetGeneration(), "reason", reason)
	c.note("workload/"+wl.Name, "RolledBack", "generation %d rolled back to revision %d as generation %d: %s",
		wl.Value.GetGeneration(), target.GetGeneration(), next.GetGeneration(), reason)
	return true, nil
}

// rollingOut says whether a workload has instances of an older
// generation than its own.
func rollingOut(wl *v1.Workload, insts []store.Versioned[*v1.Instance]) bool {
	for _, inst := range insts {
		if inst.Value.GetGeneration() != wl.GetGeneration() {
			return true
		}
	}
	return false
}

// autoRollbackCause starts the change cause of an automatic rollback.
const autoRollbackCause = "automatic rollback"

// noteRolloutStep records each step of a rolling update as an event, as
// Kubernetes records a Deployment's scaling of its replica sets: what this
// pass creates of the new generation and stops of the earlier ones, and,
// once the last of those is stopping, that the rollout is complete. A pass
// that changes nothing records nothing.
func (c *controller) noteRolloutStep(wl *v1.Workload, live []store.Versioned[*v1.Instance], remove []store.Versioned[*v1.Instance], create int) {
	old := 0
	for _, inst := range live {
		if inst.Value.GetGeneration() != wl.GetGeneration() {
			old++
		}
	}
	if old == 0 || len(remove) == 0 && create == 0 {
		return
	}
	stopping := 0
	for _, inst := range remove {
		if inst.Value.GetGeneration() != wl.GetGeneration() {
			stopping++
		}
	}
	obj := events.Workload(wl.GetName())
	if stopping == old {
		c.note(obj, "RolloutComplete", "generation %d: the last %d instance(s) of earlier generations are stopping", wl.GetGeneration(), stopping)
		return
	}
	c.note(obj, "RollingUpdate", "generation %d: %d new instance(s) created, %d of earlier generations stopping, %d still to replace",
		wl.GetGeneration(), create, stopping, old-stopping)
}
