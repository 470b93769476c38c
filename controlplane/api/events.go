package api

import (
	"context"
	"errors"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

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
	prefix := events.PrefixOf(object)
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

func objectFilter(object string) string {
	if object == "" {
		return ""
	}
	return "object=" + object
}
