package controlplane

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// EventTTL is how long events are kept.
const EventTTL = time.Hour

// events records Events in etcd under /wasmorch/events/<object>/<time>,
// bound to a shared lease so that they expire on their own.
type events struct {
	cli    *clientv3.Client
	source string

	mu      sync.Mutex
	lease   clientv3.LeaseID
	expires time.Time
}

// Record stores an event; failures are returned but callers usually only
// log them: an event is never worth failing a decision for.
func (e *events) Record(ctx context.Context, object, reason, format string, a ...any) error {
	lease, err := e.leaseFor(ctx)
	if err != nil {
		return err
	}
	ev := &v1.Event{Object: object, Reason: reason, Message: fmt.Sprintf(format, a...), UnixNano: time.Now().UnixNano(), Source: e.source}
	b, err := proto.Marshal(ev)
	if err != nil {
		return err
	}
	key := fmt.Sprintf("%s%s/%020d", store.EventsPrefix, object, ev.UnixNano)
	if _, err := e.cli.Put(ctx, key, string(b), clientv3.WithLease(lease)); err != nil {
		return errdefs.Unavailablef("record event: %v", err)
	}
	return nil
}

// leaseFor returns a lease that outlives an event by EventTTL, granting a
// new one when the current one has less than that left.
func (e *events) leaseFor(ctx context.Context) (clientv3.LeaseID, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lease != 0 && time.Until(e.expires) > EventTTL {
		return e.lease, nil
	}
	resp, err := e.cli.Grant(ctx, int64(2*EventTTL/time.Second))
	if err != nil {
		return 0, errdefs.Unavailablef("grant event lease: %v", err)
	}
	e.lease, e.expires = resp.ID, time.Now().Add(2*EventTTL)
	return e.lease, nil
}

// List returns the events of one object ("workload/x"), or all, oldest first.
func (e *events) List(ctx context.Context, object string) ([]*v1.Event, error) {
	prefix := store.EventsPrefix
	if object != "" {
		prefix += strings.TrimSuffix(object, "/") + "/"
	}
	resp, err := e.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, errdefs.Unavailablef("list events: %v", err)
	}
	out := make([]*v1.Event, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ev := &v1.Event{}
		if err := proto.Unmarshal(kv.Value, ev); err == nil {
			out = append(out, ev)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].GetUnixNano() < out[j].GetUnixNano() })
	return out, nil
}

func (a *controlAPI) ListEvents(ctx context.Context, req *v1.ListEventsRequest) (*v1.ListEventsResponse, error) {
	evs, err := a.s.events.List(ctx, req.GetObject())
	if err != nil {
		return nil, err
	}
	return &v1.ListEventsResponse{Events: evs}, nil
}
