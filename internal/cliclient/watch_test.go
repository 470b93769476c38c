package cliclient

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasmorch/wasmorch/internal/cliout"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// pagedControl serves nodes n00..n(N-1) in pages, and watches that follow
// a script, one step per Watch call.
type pagedControl struct {
	wasmorchv1.UnimplementedControlServer
	nodes int

	mu      sync.Mutex
	limits  []int32
	watches []int64 // the revision each Watch asked for
	steps   []func(*wasmorchv1.WatchRequest, wasmorchv1.Control_WatchServer) error
}

func (f *pagedControl) ListNodes(_ context.Context, req *wasmorchv1.ListNodesRequest) (*wasmorchv1.ListNodesResponse, error) {
	f.mu.Lock()
	f.limits = append(f.limits, req.GetLimit())
	f.mu.Unlock()
	start := 0
	if req.GetContinue() != "" {
		fmt.Sscanf(req.GetContinue(), "after-%d", &start)
		start++
	}
	out := &wasmorchv1.ListNodesResponse{Revision: int64(100 + start)}
	for i := start; i < f.nodes && len(out.Nodes) < int(req.GetLimit()); i++ {
		out.Nodes = append(out.Nodes, &wasmorchv1.NodeView{Node: &wasmorchv1.Node{Name: fmt.Sprintf("n%02d", i)}})
		if i < f.nodes-1 && len(out.Nodes) == int(req.GetLimit()) {
			out.Continue = fmt.Sprintf("after-%d", i)
		}
	}
	return out, nil
}

func (f *pagedControl) Watch(req *wasmorchv1.WatchRequest, stream wasmorchv1.Control_WatchServer) error {
	f.mu.Lock()
	f.watches = append(f.watches, req.GetRevision())
	n := len(f.watches)
	f.mu.Unlock()
	if n > len(f.steps) {
		<-stream.Context().Done()
		return nil
	}
	return f.steps[n-1](req, stream)
}

func sendAll(stream wasmorchv1.Control_WatchServer, evs ...*wasmorchv1.WatchEvent) error {
	for _, ev := range evs {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	return nil
}

func bookmark(rev int64) *wasmorchv1.WatchEvent {
	return &wasmorchv1.WatchEvent{Type: wasmorchv1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK, Revision: rev}
}

func instanceEvent(t wasmorchv1.WatchEventType, id string, state wasmorchv1.InstanceState) *wasmorchv1.WatchEvent {
	return &wasmorchv1.WatchEvent{Type: t, Object: &wasmorchv1.WatchEvent_Instance{Instance: &wasmorchv1.InstanceView{
		Instance: &wasmorchv1.Instance{Id: id, Workload: "web", Node: "n1"}, State: state}}}
}

func TestListsFollowTheirContinueTokens(t *testing.T) {
	f := &pagedControl{nodes: 7}
	c := serve(t, f)
	var pages [][]string
	rev, err := c.NodePages(context.Background(), nil, 3, func(ns []cliout.Node) error {
		var names []string
		for _, n := range ns {
			names = append(names, n.Name)
		}
		pages = append(pages, names)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(pages) != "[[n00 n01 n02] [n03 n04 n05] [n06]]" || rev != 100 {
		t.Errorf("pages %v, revision %d; want 3 pages of 3, 3 and 1, and the first page's revision 100", pages, rev)
	}
	if fmt.Sprint(f.limits) != "[3 3 3]" {
		t.Errorf("asked for pages of %v, want 3 each", f.limits)
	}
	if _, err := c.NodePages(context.Background(), nil, MaxChunkSize+1, nil); err == nil {
		t.Errorf("a chunk over the maximum was sent")
	}
}

// TestWatchListsAgainWhenExpiredAndResumesWhenTheServerGoes: OUT_OF_RANGE
// makes the watch list again and go on from the new list's revision; a
// stream that ends makes it watch again from the last BOOKMARK; Ctrl-C
// ends it without an error.
func TestWatchListsAgainWhenExpiredAndResumesWhenTheServerGoes(t *testing.T) {
	const (
		modified = wasmorchv1.WatchEventType_WATCH_EVENT_TYPE_MODIFIED
		deleted  = wasmorchv1.WatchEventType_WATCH_EVENT_TYPE_DELETED
		running  = wasmorchv1.InstanceState_INSTANCE_STATE_RUNNING
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &pagedControl{steps: []func(*wasmorchv1.WatchRequest, wasmorchv1.Control_WatchServer) error{
		func(_ *wasmorchv1.WatchRequest, s wasmorchv1.Control_WatchServer) error {
			if err := sendAll(s, bookmark(7), instanceEvent(modified, "web-a", running), bookmark(8)); err != nil {
				return err
			}
			return status.Error(codes.OutOfRange, "revision 8 is older than the changes this member keeps")
		},
		func(_ *wasmorchv1.WatchRequest, s wasmorchv1.Control_WatchServer) error {
			// A Pending instance is left out by the client's --state.
			return sendAll(s, bookmark(20), instanceEvent(modified, "web-p", wasmorchv1.InstanceState_INSTANCE_STATE_PENDING),
				instanceEvent(modified, "web-b", running), bookmark(21)) // then the member stops
		},
		func(_ *wasmorchv1.WatchRequest, s wasmorchv1.Control_WatchServer) error {
			if err := sendAll(s, bookmark(21), instanceEvent(deleted, "web-b", running)); err != nil {
				return err
			}
			<-s.Context().Done()
			return nil
		},
	}}
	c := serve(t, f)
	relists := 0
	var got []string
	err := c.Watch(ctx, WatchSpec{Kind: KindInstances, Workload: "web", States: []string{"running"}}, 7,
		func(context.Context) (int64, error) { relists++; return 20, nil },
		func(ch Change) error {
			got = append(got, ch.Type+" "+ch.Instance.ID)
			if ch.Type == "DELETED" {
				cancel() // Ctrl-C
			}
			return nil
		})
	if err != nil {
		t.Fatalf("a watch ended by Ctrl-C returned %v", err)
	}
	if want := "[MODIFIED web-a MODIFIED web-b DELETED web-b]"; fmt.Sprint(got) != want {
		t.Errorf("changes %v, want %s", got, want)
	}
	if relists != 1 || fmt.Sprint(f.watches) != "[7 20 21]" {
		t.Errorf("%d relists, watches from %v; want 1, and watches from 7, the relist's 20, then the last bookmark's 21", relists, f.watches)
	}
}
