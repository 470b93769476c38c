package api

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestListWorkloadsBySelectorPagesThroughEveryMatch: with a selector, a
// page holds matching workloads only; a scan that stops at its budget
// returns what it found and a continue token from where it stopped, so
// that following the tokens yields every match once.
func TestListWorkloadsBySelectorPagesThroughEveryMatch(t *testing.T) {
	s := newTestServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.cache.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	api := &controlAPI{s: s}
	var want []string
	for i := range 40 {
		name := fmt.Sprintf("w%02d", i)
		labels := map[string]string{"app": "other"}
		if i%7 == 0 {
			labels["app"] = "shop"
			want = append(want, name)
		}
		if _, err := s.store.Workloads.Create(ctx, name, &v1.Workload{Name: name, Spec: &v1.WorkloadSpec{Replicas: 1}, Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	defer func(n int) { maxScan = n }(maxScan)
	maxScan = 5
	var got []string
	req := &v1.ListWorkloadsRequest{Limit: 2, Selector: "app=shop"}
	for pages := 0; ; pages++ {
		if pages > 40 {
			t.Fatal("the pages never end")
		}
		resp, err := api.ListWorkloads(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range resp.GetWorkloads() {
			got = append(got, w.GetWorkload().GetName())
		}
		if resp.GetContinue() == "" {
			break
		}
		req.Continue = resp.GetContinue()
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("pages listed %v, want %v", got, want)
	}
	first, err := api.ListWorkloads(ctx, &v1.ListWorkloadsRequest{Limit: 1, Selector: "app=shop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.ListWorkloads(ctx, &v1.ListWorkloadsRequest{Selector: "app=other", Continue: first.GetContinue()}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a continue token taken with another selector: %v, want InvalidArgument", err)
	}
	_, err = api.ListWorkloads(ctx, &v1.ListWorkloadsRequest{Selector: "app=,=x"})
	if !errdefs.IsInvalidArgument(err) || strings.Contains(err.Error(), "\n") {
		t.Errorf("a selector that does not parse: %v, want one line, InvalidArgument", err)
	}
}
