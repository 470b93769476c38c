package controlplane_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestFallbackImages: a module's fallback image is checked at apply, and
// what the wasm runtime cannot run is recorded on the spec for the
// scheduler; a component runs only with a fallback.
func TestFallbackImages(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	var buf bytes.Buffer
	if err := ociarchive.Write(&buf, ociarchive.Image{Files: []ociarchive.File{{Path: "/app", Mode: 0o755, Data: []byte("x")}}, Entrypoint: []string{"/app"}}); err != nil {
		t.Fatal(err)
	}
	archive := buf.Bytes()
	component := []byte{0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00}
	for _, b := range [][]byte{readModule(t, "hello.wasm"), readModule(t, "badimport.wasm")} {
		if err := upload(ctx, t, c.control, b, blobs.Digest(b)); err != nil {
			t.Fatal(err)
		}
	}
	for media, b := range map[string][]byte{ociarchive.MediaType: archive, "application/wasm": component} {
		if err := uploadAs(ctx, c.control, b, media); err != nil {
			t.Fatalf("uploading %s: %v", media, err)
		}
	}
	hello, badimport := blobs.Digest(readModule(t, "hello.wasm")), blobs.Digest(readModule(t, "badimport.wasm"))
	apply := func(name string, spec *v1.WorkloadSpec) (*v1.WorkloadSpec, error) {
		resp, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: spec})
		return resp.GetWorkload().GetSpec(), errdefs.FromGRPC(err)
	}

	spec, err := apply("legacy", &v1.WorkloadSpec{ModuleDigest: badimport, FallbackArchiveDigest: blobs.Digest(archive), Replicas: 1})
	if err != nil {
		t.Fatalf("a module with a fallback archive: %v", err)
	}
	if !strings.Contains(spec.GetWasmUnsupported(), "env.does_not_exist") || spec.GetFallbackMemoryRequestBytes() != workloads.DefaultMemory {
		t.Errorf("spec = %v, want why it cannot run as wasm and the container's memory request", spec)
	}
	if spec, err = apply("plain", &v1.WorkloadSpec{ModuleDigest: hello, FallbackImage: "team/app:1.0", Replicas: 1}); err != nil || spec.GetWasmUnsupported() != "" {
		t.Errorf("a plain module with a fallback image: spec %v, err %v; want it runnable as wasm", spec, err)
	}
	if spec, err = apply("component", &v1.WorkloadSpec{ModuleDigest: blobs.Digest(component), FallbackImage: "team/app:1.0", Replicas: 1}); err != nil ||
		!strings.Contains(spec.GetWasmUnsupported(), "component") {
		t.Errorf("a component with a fallback image: spec %v, err %v; want it applied, runnable only as the image", spec, err)
	}

	refused := []struct {
		name string
		spec *v1.WorkloadSpec
		is   func(error) bool
		want string
	}{
		{"component-alone", &v1.WorkloadSpec{ModuleDigest: blobs.Digest(component)}, errdefs.IsFailedPrecondition, "fallback image"},
		// No node's wasm runtime could start these: refused before anything is stored.
		{"imports-alone", &v1.WorkloadSpec{ModuleDigest: badimport}, errdefs.IsInvalidArgument, "import env.does_not_exist is not provided by the wasm runtime"},
		{"memory-below-minimum", &v1.WorkloadSpec{ModuleDigest: hello, MemoryBytes: 64 << 10}, errdefs.IsInvalidArgument, "needs 128 KiB of initial memory, more than its memory limit of 64 KiB"},
		{"not-uploaded", &v1.WorkloadSpec{ModuleDigest: hello, FallbackArchiveDigest: blobs.Digest([]byte("nothing"))}, errdefs.IsFailedPrecondition, "has not been uploaded"},
		{"module-as-fallback", &v1.WorkloadSpec{ModuleDigest: hello, FallbackArchiveDigest: hello}, errdefs.IsFailedPrecondition, "not an OCI image archive"},
		{"both", &v1.WorkloadSpec{ModuleDigest: hello, FallbackImage: "a:1", FallbackArchiveDigest: blobs.Digest(archive)}, errdefs.IsInvalidArgument, "not both"},
		{"bad-ref", &v1.WorkloadSpec{ModuleDigest: hello, FallbackImage: "Not A Ref"}, errdefs.IsInvalidArgument, "not valid"},
		{"container-with-fallback", &v1.WorkloadSpec{Kind: "container", Image: "a:1", FallbackImage: "b:1"}, errdefs.IsInvalidArgument, "belongs to a wasm workload"},
		{"port-without-route", &v1.WorkloadSpec{Kind: "container", Image: "a:1", Port: 8080}, errdefs.IsInvalidArgument, "route"},
		// A wasm workload with a port is a Wasm service (docs/services.md).
		{"tcp-service-with-route", &v1.WorkloadSpec{ModuleDigest: hello, Port: 8080, Tcp: true, Http: &v1.HttpTrigger{Route: "/p"}}, errdefs.IsInvalidArgument, "no route"},
		{"tcp-service-with-fallback", &v1.WorkloadSpec{ModuleDigest: hello, Port: 8080, Tcp: true, FallbackImage: "a:1"}, errdefs.IsInvalidArgument, "no fallback image"},
	}
	for _, tc := range refused {
		if _, err := apply(tc.name, tc.spec); !tc.is(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one saying %q in its category", tc.name, err, tc.want)
		}
	}
}
