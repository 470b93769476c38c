package api

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/events"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// What the workers report becomes events where it matters to a person:
// an instance that crashed and is restarted after a back-off, one the
// kernel killed at its memory limit, one that failed for good, one that
// exited and is started again by its restart policy. A crash loop would
// record one event per restart, so each instance records at most one
// such event per instanceEventWindow; the next one says how many it
// stands for.

// instanceEventWindow is the least time between two events of one
// instance's exits.
const instanceEventWindow = 30 * time.Second

// maxNoted bounds how many instances the limiter remembers.
const maxNoted = 10000

// exitNotes rate-limits exit events per instance.
type exitNotes struct {
	mu   sync.Mutex
	last map[string]*exitNote
}

type exitNote struct {
	at      time.Time
	skipped int
}

// allow says whether an event for instance id may be recorded now, and
// how many were skipped since the last one.
func (n *exitNotes) allow(id string, now time.Time) (bool, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.last == nil {
		n.last = map[string]*exitNote{}
	}
	e, ok := n.last[id]
	if ok && now.Sub(e.at) < instanceEventWindow {
		e.skipped++
		return false, 0
	}
	if len(n.last) >= maxNoted {
		for k, v := range n.last {
			if now.Sub(v.at) >= instanceEventWindow {
				delete(n.last, k)
			}
		}
	}
	skipped := 0
	if ok {
		skipped = e.skipped
	}
	n.last[id] = &exitNote{at: now}
	return true, skipped
}

// exitEvents turns a batch of status reports into events, against the
// statuses the cache held before it; prev holds each reported instance's
// record and previous status.
func (s *Server) exitEvents(prev map[string]cache.Instance, sts []*v1.InstanceStatus, now time.Time) []*v1.Event {
	var out []*v1.Event
	for _, st := range sts {
		e, ok := prev[st.GetId()]
		if !ok || !st.GetExited() {
			continue
		}
		was := e.Status
		if was.GetExited() && was.GetFinishedUnixNano() == st.GetFinishedUnixNano() && was.GetRestarts() == st.GetRestarts() {
			continue // the same exit reported again
		}
		reason, msg := exitEvent(st)
		if reason == "" {
			continue
		}
		allowed, skipped := s.exits.allow(st.GetId(), now)
		if !allowed {
			continue
		}
		if skipped > 0 {
			msg += fmt.Sprintf(" (and %d more exits in the last %s)", skipped, instanceEventWindow)
		}
		out = append(out, &v1.Event{Object: events.Workload(e.Value.GetWorkload()), Reason: reason,
			Message: fmt.Sprintf("instance %s on node %s %s", st.GetId(), st.GetNode(), msg)})
	}
	return out
}

// exitEvent is the reason and message of an event for an exit: OOMKilled,
// BackOff (it failed and will be restarted), Restarting (it exited 0
// and its policy starts it again), Failed (it will not be restarted);
// none for an exit 0 that stays so.
func exitEvent(st *v1.InstanceStatus) (string, string) {
	restarting := strings.Contains(st.GetMessage(), "restarting")
	how := fmt.Sprintf("exited with code %d", st.GetExitCode())
	if r := st.GetReason(); r != "" {
		how += " (" + r + ")"
	}
	m := st.GetMessage()
	if strings.HasPrefix(m, "exited with code") {
		_, m, _ = strings.Cut(m, "; ") // the worker's message repeats the code
	}
	if m != "" {
		how += "; " + m
	}
	if n := st.GetRestarts(); n == 1 {
		how += "; 1 restart so far"
	} else {
		how += fmt.Sprintf("; %d restarts so far", n)
	}
	switch {
	case st.GetReason() == "OOMKilled":
		return "OOMKilled", "was killed at its memory limit: " + how
	case st.GetState() == v1.InstanceState_INSTANCE_STATE_FAILED && restarting:
		return "BackOff", how
	case st.GetState() == v1.InstanceState_INSTANCE_STATE_FAILED:
		return "Failed", how + "; not restarted"
	case restarting:
		return "Restarting", how
	}
	return "", ""
}

// prevStatuses is what the cache holds of the reported instances that
// exited, before the report is written.
func (s *Server) prevStatuses(sts []*v1.InstanceStatus) map[string]cache.Instance {
	prev := map[string]cache.Instance{}
	s.cache.Read(func(r cache.Reader) {
		for _, st := range sts {
			if !st.GetExited() {
				continue
			}
			if e, ok := r.Instance(st.GetId()); ok {
				prev[st.GetId()] = e
			}
		}
	})
	return prev
}

// recordExits records the events of the exits in the background: a
// report is never held up by an event.
func (s *Server) recordExits(prev map[string]cache.Instance, sts []*v1.InstanceStatus) {
	if len(prev) == 0 || s.events == nil {
		return
	}
	evs := s.exitEvents(prev, sts, time.Now())
	if len(evs) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.events.RecordAll(ctx, evs); err != nil {
			s.log.Debug("recording exit events failed", "events", len(evs), "err", err)
		}
	}()
}
