package controlplane

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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

// ListEvents pages through the events of one object, oldest first, or of
// every object: then in the order of their keys, object by object (by
// kind, then name), each object's oldest first. Every page of one list is
// read at the first page's revision, so that the pages are one snapshot
// (until etcd compacts that revision: then the list must start again)
// and a watch from that revision misses nothing.
func (a *controlAPI) ListEvents(ctx context.Context, req *v1.ListEventsRequest) (*v1.ListEventsResponse, error) {
	limit, err := pageLimit(req.GetLimit())
	if err != nil {
		return nil, err
	}
	object := strings.TrimSuffix(req.GetObject(), "/")
	tok, err := parseContinue(req.GetContinue(), "events", objectFilter(object))
	if err != nil {
		return nil, err
	}
	prefix := eventsPrefixOf(object)
	from := prefix
	if tok.After != "" {
		if from = store.EventsPrefix + tok.After; !strings.HasPrefix(from, prefix) {
			return nil, errdefs.Invalidf("the continue token is not one this server made: pass back the previous page's continue unchanged")
		}
		from += "\x00"
	}
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithLimit(int64(limit))}
	if tok.Rev != 0 {
		opts = append(opts, clientv3.WithRev(tok.Rev))
	}
	resp, err := a.s.store.Client.Get(ctx, from, opts...)
	if errors.Is(err, rpctypes.ErrCompacted) {
		return nil, errdefs.Expiredf("the events at revision %d, where this list started, have been compacted since: list them again from the first page", tok.Rev)
	} else if err != nil {
		return nil, errdefs.Unavailablef("list events: %v", err)
	}
	out := &v1.ListEventsResponse{Events: make([]*v1.Event, 0, len(resp.Kvs)), Revision: tok.Rev}
	if out.Revision == 0 {
		out.Revision = resp.Header.Revision
	}
	keys := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ev := &v1.Event{}
		if err := proto.Unmarshal(kv.Value, ev); err == nil {
			out.Events = append(out.Events, ev)
			keys = append(keys, string(kv.Key))
		}
	}
	more := resp.More
	if n := fitPage(out.Events); n < len(out.Events) {
		out.Events, keys, more = out.Events[:n], keys[:n], true
	}
	if more && len(keys) > 0 {
		tok.After, tok.Rev = strings.TrimPrefix(keys[len(keys)-1], store.EventsPrefix), out.Revision
		out.Continue = tok.encode()
	} else if more {
		// Nothing here decoded: go on after the last key read.
		tok.After, tok.Rev = strings.TrimPrefix(string(resp.Kvs[len(resp.Kvs)-1].Key), store.EventsPrefix), out.Revision
		out.Continue = tok.encode()
	}
	return out, nil
}

// eventsPrefixOf is where the events of object ("workload/x"; "" for
// every object) are kept.
func eventsPrefixOf(object string) string {
	if object == "" {
		return store.EventsPrefix
	}
	return store.EventsPrefix + object + "/"
}

func objectFilter(object string) string {
	if object == "" {
		return ""
	}
	return "object=" + object
}
