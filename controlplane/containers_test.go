package controlplane_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func uploadAs(ctx context.Context, c v1.ControlClient, b []byte, media string) error {
	stream, err := c.UploadBlob(ctx)
	if err != nil {
		return err
	}
	hdr := &v1.UploadHeader{Digest: blobs.Digest(b), Size: int64(len(b)), MediaType: media}
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: hdr}}); err != nil {
		return err
	}
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Chunk{Chunk: b}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = stream.CloseAndRecv()
	return errdefs.FromGRPC(err)
}

// TestContainerWorkloads: image archives are uploaded like modules and
// checked; container specs name exactly one image source; a blob runs only
// as the kind it is.
func TestContainerWorkloads(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	var buf bytes.Buffer
	if err := ociarchive.Write(&buf, ociarchive.Image{Files: []ociarchive.File{{Path: "/app", Mode: 0o755, Data: []byte("x")}}, Entrypoint: []string{"/app"}}); err != nil {
		t.Fatal(err)
	}
	archive := buf.Bytes()
	if err := uploadAs(ctx, c.control, archive, ociarchive.MediaType); err != nil {
		t.Fatalf("uploading an image archive: %v", err)
	}
	hello := readModule(t, "hello.wasm")
	if err := upload(ctx, t, c.control, hello, blobs.Digest(hello)); err != nil {
		t.Fatal(err)
	}
	apply := func(name string, spec *v1.WorkloadSpec) (*v1.ApplyWorkloadResponse, error) {
		resp, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: spec})
		return resp, errdefs.FromGRPC(err)
	}

	resp, err := apply("box", &v1.WorkloadSpec{Kind: "container", ModuleDigest: blobs.Digest(archive), Replicas: 1})
	if err != nil {
		t.Fatalf("applying a container workload from an archive: %v", err)
	}
	if s := resp.GetWorkload().GetSpec(); s.GetModuleSize() != int64(len(archive)) || s.GetMemoryRequestBytes() != workloads.DefaultMemory {
		t.Errorf("spec = %v, want the archive's size and the default memory reserved", s)
	}
	resp, err = apply("pulled", &v1.WorkloadSpec{Kind: "container", Image: "registry.example.com/team/api:1.4", MemoryBytes: 256 << 20})
	if err != nil {
		t.Fatalf("applying a container workload from an image reference: %v", err)
	}
	if got := resp.GetWorkload().GetSpec().GetMemoryRequestBytes(); got != 256<<20 {
		t.Errorf("memory request = %d, want the 256 MiB limit", got)
	}

	corrupt := bytes.Clone(archive)
	corrupt[len(corrupt)/2] ^= 0xff
	for _, tc := range []struct {
		name    string
		call    func() error
		is      error
		message string
	}{
		{"corrupt archive", func() error { return uploadAs(ctx, c.control, corrupt, ociarchive.MediaType) }, errdefs.ErrInvalidArgument, "invalid OCI image archive"},
		{"unknown media type", func() error { return uploadAs(ctx, c.control, archive, "application/zip") }, errdefs.ErrInvalidArgument, "is not supported"},
		{"no image", func() error {
			_, err := apply("a", &v1.WorkloadSpec{Kind: "container"})
			return err
		}, errdefs.ErrInvalidArgument, "needs an image"},
		{"archive and image", func() error {
			_, err := apply("a", &v1.WorkloadSpec{Kind: "container", ModuleDigest: blobs.Digest(archive), Image: "team/app:1"})
			return err
		}, errdefs.ErrInvalidArgument, "not both"},
		{"bad reference", func() error {
			_, err := apply("a", &v1.WorkloadSpec{Kind: "container", Image: "Team/App!"})
			return err
		}, errdefs.ErrInvalidArgument, "is not valid"},
		{"image on a wasm workload", func() error {
			_, err := apply("a", &v1.WorkloadSpec{ModuleDigest: blobs.Digest(hello), Image: "team/app:1"})
			return err
		}, errdefs.ErrInvalidArgument, "belongs to a container workload"},
		{"archive as wasm", func() error {
			_, err := apply("a", &v1.WorkloadSpec{ModuleDigest: blobs.Digest(archive)})
			return err
		}, errdefs.ErrFailedPrecondition, "is an OCI image archive"},
		{"module as container", func() error {
			_, err := apply("a", &v1.WorkloadSpec{Kind: "container", ModuleDigest: blobs.Digest(hello)})
			return err
		}, errdefs.ErrFailedPrecondition, "not an OCI image archive"},
		{"archive never uploaded", func() error {
			_, err := apply("a", &v1.WorkloadSpec{Kind: "container", ModuleDigest: blobs.Digest([]byte("nope"))})
			return err
		}, errdefs.ErrFailedPrecondition, "has not been uploaded"},
		{"unknown kind", func() error {
			_, err := apply("a", &v1.WorkloadSpec{Kind: "vm", ModuleDigest: blobs.Digest(hello)})
			return err
		}, errdefs.ErrInvalidArgument, `use "wasm" or "container"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("got %v; want %v containing %q", err, tc.is, tc.message)
			}
		})
	}
}
