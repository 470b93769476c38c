package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/wasmorch/wasmorch/ctrrt"
	"github.com/wasmorch/wasmorch/internal/ctrtest"
	"github.com/wasmorch/wasmorch/worker/runtimeapi/rtconformance"
)

// The container tests run the runtime conformance program (a static Go
// binary) packed into an OCI image archive by the test, on a containerd of
// the test's own: no registry, no system service.

// appImage returns the path of an OCI image archive whose entrypoint is
// the conformance program (`-- sleep` keeps it running, printing
// "sleeping"). Go's build cache makes every build after the first cheap.
func appImage(t *testing.T) string {
	t.Helper()
	return ctrtest.ImageArchive(t, rtconformance.BuildProgram(t, "linux", runtime.GOARCH))
}

// corruptImage writes an OCI layout archive whose index names a manifest
// the archive does not hold.
func corruptImage(t *testing.T) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct{ name, body string }{
		{"oci-layout", `{"imageLayoutVersion":"1.0.0"}`},
		{"index.json", `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` +
			"0000000000000000000000000000000000000000000000000000000000000000" + `","size":100}]}`},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "broken-oci.tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// instanceDetail is an instance of `get instances -o json` with the fields
// the container tests look at.
type instanceDetail struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Runtime string `json:"runtime"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	// Why a wasm workload's instance runs as its fallback container.
	RuntimeReason string    `json:"runtimeReason"`
	Restarts      int       `json:"restarts"`
	StartedAt     time.Time `json:"startedAt"`
}

func (c *cluster) instanceDetails(workload string) []instanceDetail {
	c.t.Helper()
	var is []instanceDetail
	r := c.mustRun("get", "instances", "--workload", workload, "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &is); err != nil {
		c.t.Fatalf("not a JSON array: %v\n%s", err, r)
	}
	return is
}

// nodeRuntimes returns the runtimes each node offers.
func (c *cluster) nodeRuntimes() map[string][]string {
	c.t.Helper()
	var ns []struct {
		Name     string   `json:"name"`
		Runtimes []string `json:"runtimes"`
	}
	c.getJSON(&ns, "nodes")
	out := map[string][]string{}
	for _, n := range ns {
		out[n.Name] = n.Runtimes
	}
	return out
}

// leftovers lists the containers and active snapshots in the wasmorch
// namespace of d.
func leftovers(t *testing.T, d *ctrtest.Daemon) (ctrs []string, snaps []string) {
	t.Helper()
	ctx := context.Background()
	c := d.Client(t, "wasmorch")
	list, err := c.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ctr := range list {
		ctrs = append(ctrs, ctr.ID())
	}
	err = c.SnapshotService("overlayfs").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive {
			snaps = append(snaps, info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ctrs, snaps
}

// taskPid is the pid of the running task of container id.
func taskPid(t *testing.T, d *ctrtest.Daemon, id string) uint32 {
	t.Helper()
	ctx := context.Background()
	ctr, err := d.Client(t, "wasmorch").LoadContainer(ctx, id)
	if err != nil {
		t.Fatalf("container %s: %v", id, err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatalf("task of %s: %v", id, err)
	}
	return task.Pid()
}

// startGhost starts, behind wasmorch's back, a container labelled as the
// instance of a workload that no longer exists (as a worker that died
// before it could stop it leaves one), from the image the worker imported
// from archive.
func startGhost(t *testing.T, d *ctrtest.Daemon, archive string) string {
	t.Helper()
	ctx := context.Background()
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	c := d.Client(t, "wasmorch")
	img, err := c.GetImage(ctx, "wasmorch.local/archive:"+hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatalf("the image the worker imported: %v", err)
	}
	const id = "ghost-x1y2z"
	ctr, err := c.NewContainer(ctx, id, client.WithImage(img), client.WithNewSnapshot(id, img),
		client.WithNewSpec(oci.WithImageConfigArgs(img, []string{"sleep"})),
		client.WithContainerLabels(map[string]string{ctrrt.LabelInstance: id}))
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return id
}
