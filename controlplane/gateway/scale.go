package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// LoadPrefix holds each gateway's load per function
// (LoadPrefix/<workload>/<member>, a v1.FunctionLoad bound to a lease).
const LoadPrefix = store.LoadsPrefix

const (
	// reportEvery is how often a gateway publishes its load.
	reportEvery = time.Second
	// loadTTL outlives a few missed reports of a member that went away.
	loadTTL = 10 * time.Second
)

// load is one function's load as this gateway sees it.
type load struct {
	mu       sync.Mutex
	inFlight int64
	peak     int64
	last     time.Time
	requests int64
	dirty    bool // changed since the last report

	// rollouts: what each generation's replicas answered (answered).
	generations map[int64]*generationCount
}

// generationCount is what one generation's replicas answered through this
// gateway, and when last.
type generationCount struct {
	requests, errors int64
	last             time.Time
}

// generationTTL is how long a generation that answers nothing more is
// still reported: long enough for a rollout to compare it.
const generationTTL = 10 * time.Minute

// failedAnswer says whether a replica's answer counts as the function
// failing the request: a 5xx it sent (a trap, malformed output, its
// timeout), but not a replica too busy to take it.
func failedAnswer(status int, saturated bool) bool {
	return status >= 500 && !(status == http.StatusServiceUnavailable && saturated)
}

// answered counts a replica's answer for its generation.
func (l *load) answered(generation int64, failed bool, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.generations == nil {
		l.generations = map[int64]*generationCount{}
	}
	c := l.generations[generation]
	if c == nil {
		c = &generationCount{}
		l.generations[generation] = c
	}
	c.requests++
	if failed {
		c.errors++
	}
	c.last, l.dirty = now, true
}

// generationsLocked is the generations part of a report; generations
// that answered nothing for generationTTL are dropped.
func (l *load) generationsLocked(now time.Time) map[int64]*v1.GenerationRequests {
	if len(l.generations) == 0 {
		return nil
	}
	out := make(map[int64]*v1.GenerationRequests, len(l.generations))
	for gen, c := range l.generations {
		if now.Sub(c.last) > generationTTL {
			delete(l.generations, gen)
			continue
		}
		out[gen] = &v1.GenerationRequests{Requests: c.requests, Errors: c.errors}
	}
	return out
}

func (l *load) begin(now time.Time) {
	l.mu.Lock()
	l.inFlight++
	l.requests++
	l.peak = max(l.peak, l.inFlight)
	l.last, l.dirty = now, true
	l.mu.Unlock()
}

func (l *load) end() {
	l.mu.Lock()
	l.inFlight--
	l.dirty = true
	l.mu.Unlock()
}

// loadOf returns the load record of a workload.
func (g *Gateway) loadOf(workload string) *load {
	if l, ok := g.loads.Load(workload); ok {
		return l.(*load)
	}
	l, _ := g.loads.LoadOrStore(workload, &load{})
	return l.(*load)
}

// reportLoads publishes the load of every function that saw requests,
// until ctx is done.
func (g *Gateway) reportLoads(ctx context.Context) {
	var lease clientv3.LeaseID
	t := time.NewTicker(reportEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		type report struct {
			workload string
			rec      *v1.FunctionLoad
		}
		var reports []report
		g.loads.Range(func(name, v any) bool {
			l := v.(*load)
			l.mu.Lock()
			if l.dirty || l.inFlight > 0 {
				reports = append(reports, report{name.(string), &v1.FunctionLoad{
					InFlight: l.inFlight, PeakInFlight: l.peak, LastRequestUnixNano: l.last.UnixNano(), Requests: l.requests,
					Generations: l.generationsLocked(time.Now()),
				}})
				// A peak above the count now is reported once; the next
				// report lowers it, or the autoscaler would keep seeing it.
				l.dirty, l.peak = l.peak != l.inFlight, l.inFlight
			}
			l.mu.Unlock()
			return true
		})
		if len(reports) == 0 {
			continue
		}
		if lease == 0 {
			resp, err := g.st.Client.Grant(ctx, int64(loadTTL/time.Second))
			if err != nil {
				continue
			}
			lease = resp.ID
		} else if _, err := g.st.Client.KeepAliveOnce(ctx, lease); err != nil {
			lease = 0
			continue
		}
		for _, r := range reports {
			b, err := proto.Marshal(r.rec)
			if err != nil {
				continue
			}
			key := LoadPrefix + r.workload + "/" + g.member
			if _, err := g.st.Client.Put(ctx, key, string(b), clientv3.WithLease(lease)); err != nil {
				g.log.Debug("gateway: reporting load failed", "workload", r.workload, "err", err)
			}
		}
	}
}

// waitForReplica holds a request for a function with no routable replica
// (or, when stale, whose replicas in the current table were all tried):
// it asks for one if the function is scaled to zero (an autoscaled
// function only), then waits for the route table to have one, until ctx
// is done. It returns the route from the table that has it.
func (g *Gateway) waitForReplica(ctx context.Context, rt *route, stale bool) (*route, error) {
	if rt.autoscale == nil && !stale {
		return nil, errNoReplica
	}
	woken := rt.autoscale == nil // only autoscaled functions are woken
	for {
		changed := g.changed()
		cur := g.table.Load().byName(rt.workload)
		if cur == nil {
			return nil, errNoReplica // deleted meanwhile
		}
		if stale && cur != rt {
			stale = false // rebuilt since rt was read: its replicas are new to this request
		}
		if len(cur.replicas) > 0 && !stale {
			return cur, nil
		}
		if len(cur.replicas) == 0 && cur.autoscale == nil {
			return nil, errNoReplica
		}
		if stale {
			// The replicas in this table were tried: wait for the next.
			stale = false
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}
		if !woken {
			if err := g.wake(ctx, rt.workload); err != nil && ctx.Err() == nil {
				return nil, err
			}
			woken = true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// wake scales a function at zero replicas to its minimum, or one.
func (g *Gateway) wake(ctx context.Context, workload string) error {
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := g.st.Workloads.Get(ctx, workload)
		if err != nil {
			return err
		}
		spec := cur.Value.GetSpec()
		if spec.GetReplicas() > 0 || spec.GetAutoscale() == nil || spec.GetAutoscale().GetMaxReplicas() < 1 {
			return nil // already on its way, or not ours to scale
		}
		wl := proto.Clone(cur.Value).(*v1.Workload)
		wl.Spec.Replicas = max(spec.GetAutoscale().GetMinReplicas(), 1)
		wl.UpdatedUnixNano = time.Now().UnixNano()
		if _, err := g.st.Workloads.Update(ctx, workload, wl, cur.ModRevision); errdefs.IsConflict(err) {
			continue
		} else if err != nil {
			return err
		}
		if g.record != nil {
			g.record(ctx, "workload/"+workload, "ScaledFromZero", fmt.Sprintf("a request arrived at %s; scaled to %d replica(s)", g.member, wl.Spec.Replicas))
		}
		return nil
	}
	return errors.New("gateway: the workload kept changing while scaling it from zero")
}

// changed returns a channel closed at the next route table swap.
func (g *Gateway) changed() <-chan struct{} {
	g.swapMu.Lock()
	defer g.swapMu.Unlock()
	return g.swap
}

// publish swaps in a new table and wakes the requests waiting for one.
func (g *Gateway) publish(t *table) {
	g.table.Store(t)
	g.swapMu.Lock()
	close(g.swap)
	g.swap = make(chan struct{})
	g.swapMu.Unlock()
}
