package integration

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/ctrtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/runtimeapi/rtconformance"
)

// TestImageForAnotherArchitectureIsNotRetriedThere: a container workload
// whose image archive holds only another architecture's image fails on
// the node with WrongArchitecture, saying which platforms it holds; the
// controller retires the instance and records the node as unfit for the
// workload's generation, and the replacement waits Pending saying why,
// rather than being started there again and again (edge, issue 19).
func TestImageForAnotherArchitectureIsNotRetriedThere(t *testing.T) {
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	a := start(t, options{containerd: ctrtest.Start(t)})
	ctx := context.Background()
	a.waitFor(t, "the node offering containers", func() (bool, string) {
		l, err := a.control.ListNodes(ctx, &v1.ListNodesRequest{})
		return err == nil && len(l.GetNodes()) == 1 && slices.Contains(l.GetNodes()[0].GetNode().GetRuntimes(), "container"), l.String()
	})
	bin, err := os.ReadFile(rtconformance.BuildProgram(t, "linux", runtime.GOARCH))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := ociarchive.Write(&buf, ociarchive.Image{Files: []ociarchive.File{{Path: "/app", Mode: 0o755, Data: bin}},
		Entrypoint: []string{"/app"}, Arch: other}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "foreign-oci.tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	digest := a.uploadArchive(t, path)
	if _, err := a.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "foreign", Spec: &v1.WorkloadSpec{
		Kind: "container", ModuleDigest: digest, Replicas: 1, Args: []string{"sleep"}}}); err != nil {
		t.Fatal(err)
	}
	want := "0/1 nodes fit: 1 could not run this revision before (WrongArchitecture)"
	a.waitFor(t, "the replacement Pending, saying why", func() (bool, string) {
		is := a.instances(t, "foreign")
		return len(is) == 1 && is[0].GetState() == v1.InstanceState_INSTANCE_STATE_PENDING && is[0].GetInstance().GetPendingReason() == want, describe(is)
	})
	wl, err := a.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "foreign"})
	if err != nil {
		t.Fatal(err)
	}
	u := wl.GetWorkload().GetUnfitNodes()
	if len(u) != 1 || u[0].GetNode() != "it-node" || u[0].GetUnfit() != v1.NodeUnfit_NODE_UNFIT_ARCH || u[0].GetGeneration() != 1 ||
		!strings.Contains(u[0].GetMessage(), "holds linux/"+other+" only; this node is linux/"+runtime.GOARCH) {
		t.Fatalf("unfit nodes %v, want it-node for generation 1, its platforms named", u)
	}
	evs, err := a.control.ListEvents(ctx, &v1.ListEventsRequest{Object: "node/it-node"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs.GetEvents() {
		found = found || e.GetReason() == "NodeUnfit" && strings.Contains(e.GetMessage(), "cannot run workload foreign generation 1 (WrongArchitecture")
	}
	if !found {
		t.Fatalf("no NodeUnfit event on the node: %v", evs.GetEvents())
	}
}
