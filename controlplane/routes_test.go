package controlplane_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestSimultaneousDeploysOfOneRouteOneWins lines two deploys of the same
// route up after both have checked the routes and before either writes:
// exactly one may succeed, the other is refused naming the winner. After a
// delete (which releases the claim) or a route change, the route is free.
func TestSimultaneousDeploysOfOneRouteOneWins(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	hello := readModule(t, "hello.wasm")
	digest := blobs.Digest(hello)
	if err := upload(ctx, t, c.control, hello, digest); err != nil {
		t.Fatal(err)
	}
	spec := func(route string) *v1.WorkloadSpec {
		return &v1.WorkloadSpec{Kind: "wasm", ModuleDigest: digest, Http: &v1.HttpTrigger{Route: route}}
	}

	// The first two checks wait for each other; later ones (retries) pass.
	var arrived atomic.Int32
	both := make(chan struct{})
	controlplane.SetRouteCheckedHook(c.srv, func() {
		switch arrived.Add(1) {
		case 1:
			select {
			case <-both:
			case <-time.After(10 * time.Second): // a safety net, not a timing assertion
			}
		case 2:
			close(both)
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, name := range []string{"fn-a", "fn-b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: spec("/same")})
			errs[i] = errdefs.FromGRPC(err)
		}()
	}
	wg.Wait()
	controlplane.SetRouteCheckedHook(c.srv, nil)
	if arrived.Load() < 2 {
		t.Fatalf("the two deploys were not lined up (%d route checks)", arrived.Load())
	}
	won, lost := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case errdefs.IsFailedPrecondition(err):
			lost++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if won != 1 || lost != 1 {
		t.Fatalf("simultaneous deploys of one route: %d succeeded, %d refused (%v); want exactly one each", won, lost, errs)
	}
	l, err := c.control.ListWorkloads(ctx, &v1.ListWorkloadsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(l.GetWorkloads()); n != 1 {
		t.Fatalf("%d workloads stored, want 1", n)
	}
	winner := l.GetWorkloads()[0].GetWorkload().GetName()
	loser := map[string]string{"fn-a": "fn-b", "fn-b": "fn-a"}[winner]

	// Moving the winner to another route frees /same.
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: winner, Spec: spec("/moved")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: loser, Spec: spec("/same")}); err != nil {
		t.Fatalf("the route was freed by the move, yet: %v", err)
	}
	// Deleting the winner frees /moved.
	if _, err := c.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: winner}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "fn-c", Spec: spec("/moved")}); err != nil {
		t.Fatalf("the route was freed by the delete, yet: %v", err)
	}
	_, err = c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "fn-d", Spec: spec("/moved/")})
	if err = errdefs.FromGRPC(err); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("a deploy of a route held by fn-c: %v, want FailedPrecondition", err)
	}
}
