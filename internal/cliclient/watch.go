package cliclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasmorch/wasmorch/internal/cliout"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// WatchReconnectTimeout is how long a watch keeps trying to watch again
// after its server went away (on any of the --server addresses) before it
// gives up.
const WatchReconnectTimeout = 30 * time.Second

// Watch kinds.
const (
	KindWorkloads = "workloads"
	KindInstances = "instances"
	KindNodes     = "nodes"
	KindEvents    = "events"
)

// WatchSpec says what a watch follows: a kind, narrowed by the server to
// a workload or a node (instances, events), and by the client to a
// workload's name (workloads), instance states, or node labels.
type WatchSpec struct {
	Kind     string
	Workload string
	Node     string
	// Name keeps one workload (kind workloads).
	Name string
	// States keeps instances in one of these states (names, any case).
	States []string
	// Selector keeps nodes carrying every one of these labels.
	Selector map[string]string
	// LabelSelector keeps workloads, or instances of workloads, whose
	// labels match it (on the server).
	LabelSelector string
}

// Change is one change a watch reports: Type is ADDED, MODIFIED or
// DELETED, and one of the objects is set.
type Change struct {
	Type     string
	Workload *cliout.Workload
	Instance *cliout.Instance
	Node     *cliout.Node
	Event    *cliout.Event
	// cloud: a node group's status (nodegroups.go)
	NodeGroup *cliout.NodeGroup
}

// Watch follows the changes spec selects after revision rev (a list's)
// and hands each to change, until ctx ends (then it returns nil: Ctrl-C
// ends a watch normally). When the server no longer keeps the changes
// after the revision it has (OUT_OF_RANGE), relist lists again and
// returns the new list's revision; when the server goes away, the watch
// goes on from the last revision it had, on whichever --server member
// answers, for up to WatchReconnectTimeout.
func (c *Client) Watch(ctx context.Context, spec WatchSpec, rev int64, relist func(context.Context) (int64, error), change func(Change) error) error {
	req := &wasmorchv1.WatchRequest{Workload: spec.Workload, Node: spec.Node, Selector: spec.LabelSelector}
	switch spec.Kind {
	case KindWorkloads:
		req.Kind = wasmorchv1.WatchKind_WATCH_KIND_WORKLOADS
	case KindInstances:
		req.Kind = wasmorchv1.WatchKind_WATCH_KIND_INSTANCES
	case KindNodes:
		req.Kind = wasmorchv1.WatchKind_WATCH_KIND_NODES
	case KindEvents:
		req.Kind = wasmorchv1.WatchKind_WATCH_KIND_EVENTS
	case KindNodeGroups:
		req.Kind = wasmorchv1.WatchKind_WATCH_KIND_NODE_GROUPS
	default:
		return Errorf("watch workloads, instances, nodes or events", "cannot watch %q", spec.Kind)
	}
	states, err := ParseStates(spec.States)
	if err != nil {
		return err
	}
	keep := spec.keep(states)
	if err := c.connect(ctx); err != nil {
		return err
	}
	backoff := 100 * time.Millisecond
	lost := time.Time{} // when the server went away, if it did
	for {
		req.Revision = rev
		connected, err := c.watchOnce(ctx, req, &rev, keep, change)
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			lost = time.Time{}
			if rev != req.Revision {
				backoff = 100 * time.Millisecond // it got somewhere
			}
		}
		var ue *Error
		cat := errdefs.FromGRPC(err)
		switch {
		case errors.As(err, &ue):
			return err // change failed (stdout closed, say)
		case errdefs.IsExpired(cat):
			if rev, err = relist(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			continue
		case err == nil, errors.Is(err, io.EOF), status.Code(err) == codes.Unavailable, errdefs.IsUnavailable(cat):
			// The server went away, or is between leaders: watch again.
		default:
			return c.failure(err, spec.Workload)
		}
		if lost.IsZero() {
			lost = time.Now()
		} else if time.Since(lost) > WatchReconnectTimeout {
			why := "it went away"
			if err != nil {
				why = OneLine(errdefs.FromGRPC(err).Error())
			}
			return &Error{
				What:  fmt.Sprintf("lost the watch: the wasmorch server at %s has not answered for %s (%s)", c.addr, WatchReconnectTimeout, why),
				Hint:  serverHint,
				Cause: errors.Join(errUnreachable, errdefs.ErrUnavailable, err),
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// watchOnce runs one Watch stream until it ends, moving rev to each
// BOOKMARK's revision (from which a new stream resumes). connected says
// whether the stream got as far as its first message.
func (c *Client) watchOnce(ctx context.Context, req *wasmorchv1.WatchRequest, rev *int64, keep func(Change) bool, change func(Change) error) (connected bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.api.Watch(ctx, req)
	if err != nil {
		return false, err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return connected, err
		}
		connected = true
		ch, ok := changeOf(ev)
		if !ok {
			if ev.GetType() == wasmorchv1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK {
				*rev = ev.GetRevision()
			}
			continue
		}
		if keep(ch) {
			if err := change(ch); err != nil {
				return connected, &Error{What: "printing the watch failed: " + err.Error(), Cause: err}
			}
		}
	}
}

// changeOf turns a watch event into a change; a BOOKMARK is none.
func changeOf(ev *wasmorchv1.WatchEvent) (Change, bool) {
	var ch Change
	switch ev.GetType() {
	case wasmorchv1.WatchEventType_WATCH_EVENT_TYPE_ADDED:
		ch.Type = "ADDED"
	case wasmorchv1.WatchEventType_WATCH_EVENT_TYPE_MODIFIED:
		ch.Type = "MODIFIED"
	case wasmorchv1.WatchEventType_WATCH_EVENT_TYPE_DELETED:
		ch.Type = "DELETED"
	default:
		return ch, false
	}
	switch o := ev.GetObject().(type) {
	case *wasmorchv1.WatchEvent_Workload:
		w := cliout.WorkloadFrom(o.Workload)
		ch.Workload = &w
	case *wasmorchv1.WatchEvent_Instance:
		i := cliout.InstanceFrom(o.Instance)
		ch.Instance = &i
	case *wasmorchv1.WatchEvent_Node:
		n := cliout.NodeFrom(o.Node)
		ch.Node = &n
	case *wasmorchv1.WatchEvent_Event:
		e := cliout.EventFrom(o.Event)
		ch.Event = &e
	case *wasmorchv1.WatchEvent_NodeGroup:
		g := cliout.NodeGroupFrom(o.NodeGroup)
		ch.NodeGroup = &g
	default:
		return ch, false
	}
	return ch, true
}

// keep is the client's side of spec's filters.
func (spec WatchSpec) keep(states []wasmorchv1.InstanceState) func(Change) bool {
	names := map[string]bool{}
	for _, s := range states {
		names[cliout.StateName(s)] = true
	}
	return func(ch Change) bool {
		switch {
		case ch.Workload != nil && spec.Name != "":
			return ch.Workload.Name == spec.Name
		case ch.Instance != nil && len(names) > 0:
			return names[ch.Instance.State]
		case ch.Node != nil && len(spec.Selector) > 0:
			for k, v := range spec.Selector {
				if ch.Node.Labels[k] != v {
					return false
				}
			}
		}
		return true
	}
}
