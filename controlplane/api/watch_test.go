package api

import (
	"context"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestEventsFromACompactedRevisionAreOutOfRange: events come from etcd's
// own history; once etcd has compacted a revision, a watch or a list of
// events continued from it is OUT_OF_RANGE and says to list again.
func TestEventsFromACompactedRevisionAreOutOfRange(t *testing.T) {
	s := newTestServer(t, nil)
	ctx := context.Background()
	api := &controlAPI{s: s}
	for i := range 4 {
		if err := s.events.Record(ctx, events.Node("n1"), "Tested", "event %d", i); err != nil {
			t.Fatal(err)
		}
	}
	first, err := api.ListEvents(ctx, &v1.ListEventsRequest{Object: "node/n1", Limit: 2})
	if err != nil || len(first.GetEvents()) != 2 || first.GetContinue() == "" {
		t.Fatalf("first page: %v, %v", first, err)
	}
	for i := range 2 {
		if err := s.events.Record(ctx, events.Node("n1"), "Tested", "event %d after the list", i); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := s.store.Client.Get(ctx, "any")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.Client.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}

	var sent []*v1.WatchEvent
	err = s.watchEvents(ctx, &v1.WatchRequest{Kind: v1.WatchKind_WATCH_KIND_EVENTS, Node: "n1", Revision: first.GetRevision()}, func(ev *v1.WatchEvent) error {
		sent = append(sent, ev)
		return nil
	})
	if !errdefs.IsExpired(err) || !strings.Contains(err.Error(), "list again") {
		t.Errorf("a watch of events from a compacted revision: %v, want OUT_OF_RANGE saying to list again", err)
	}
	for _, ev := range sent {
		if ev.GetType() != v1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK {
			t.Errorf("the watch sent %v before it failed", ev)
		}
	}
	_, err = api.ListEvents(ctx, &v1.ListEventsRequest{Object: "node/n1", Limit: 2, Continue: first.GetContinue()})
	if !errdefs.IsExpired(err) || !strings.Contains(err.Error(), "list them again") {
		t.Errorf("the second page of a list whose revision was compacted: %v, want OUT_OF_RANGE", err)
	}
	again, err := api.ListEvents(ctx, &v1.ListEventsRequest{Object: "node/n1"})
	if err != nil || len(again.GetEvents()) != 6 {
		t.Errorf("listing again: %d events, %v; want all 6", len(again.GetEvents()), err)
	}
}
