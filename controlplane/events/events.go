// Package events records what happened to the cluster's objects (an
// instance lost, a rollout rolled back, a node not ready) as Event records
// in etcd under /wasmorch/events/<object>/<time>, bound to a shared lease
// so that they expire on their own. The API lists and watches them; the
// controllers and the API record them. Recording an event never fails a
// decision: callers log a failure and go on.
package events

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

// TTL is how long events are kept.
const TTL = time.Hour

// Workload and Node name the objects events are about.
func Workload(name string) string { return "workload/" + name }

// Node: see Workload.
func Node(name string) string { return "node/" + name }

// PrefixOf is where the events of object ("workload/x"; "" for every
// object) are kept.
func PrefixOf(object string) string {
	if object == "" {
		return store.EventsPrefix
	}
	return store.EventsPrefix + strings.TrimSuffix(object, "/") + "/"
}

// Recorder records events for one member (their Source).
type Recorder struct {
	cli    *clientv3.Client
	source string

	mu      sync.Mutex
	lease   clientv3.LeaseID
	expires time.Time
}

// New returns a recorder writing through cli for the member source.
func New(cli *clientv3.Client, source string) *Recorder {
	return &Recorder{cli: cli, source: source}
}

// Record stores an event; failures are returned but callers usually only
// log them: an event is never worth failing a decision for.
func (e *Recorder) Record(ctx context.Context, object, reason, format string, a ...any) error {
	lease, err := e.leaseFor(ctx)
	if err != nil {
		return err
	}
	ev := &v1.Event{Object: object, Reason: reason, Message: fmt.Sprintf(format, a...), UnixNano: time.Now().UnixNano(), Source: e.source}
	b, err := proto.Marshal(ev)
	if err != nil {
		return err
	}
	if _, err := e.cli.Put(ctx, key(ev), string(b), clientv3.WithLease(lease)); err != nil {
		return errdefs.Unavailablef("record event: %v", err)
	}
	return nil
}

// RecordAll stores several events in as few transactions as possible.
func (e *Recorder) RecordAll(ctx context.Context, evs []*v1.Event) error {
	lease, err := e.leaseFor(ctx)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	ops := make([]clientv3.Op, 0, len(evs))
	for i, ev := range evs {
		ev.UnixNano, ev.Source = now+int64(i), e.source // distinct keys within one batch
		b, err := proto.Marshal(ev)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(key(ev), string(b), clientv3.WithLease(lease)))
	}
	_, err = store.Txn(ctx, e.cli, nil, ops)
	return err
}

func key(ev *v1.Event) string {
	return fmt.Sprintf("%s%s/%020d", store.EventsPrefix, ev.GetObject(), ev.GetUnixNano())
}

// leaseFor returns a lease that outlives an event by TTL, granting a new
// one when the current one has less than that left.
func (e *Recorder) leaseFor(ctx context.Context) (clientv3.LeaseID, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lease != 0 && time.Until(e.expires) > TTL {
		return e.lease, nil
	}
	resp, err := e.cli.Grant(ctx, int64(2*TTL/time.Second))
	if err != nil {
		return 0, errdefs.Unavailablef("grant event lease: %v", err)
	}
	e.lease, e.expires = resp.ID, time.Now().Add(2*TTL)
	return e.lease, nil
}

// List returns the events of one object ("workload/x"), or all, oldest
// first. It reads them all: for tests and small objects; the API pages.
func (e *Recorder) List(ctx context.Context, object string) ([]*v1.Event, error) {
	resp, err := e.cli.Get(ctx, PrefixOf(object), clientv3.WithPrefix())
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
