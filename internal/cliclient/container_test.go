package cliclient

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/ctrtest"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func TestDefaultName(t *testing.T) {
	for _, tc := range []struct {
		cfg  DeployConfig
		want string
	}{
		{DeployConfig{File: "testdata/hello.wasm"}, "hello"},
		{DeployConfig{File: "./api-oci.tar"}, "api"},
		{DeployConfig{File: "build/api.tar"}, "api"},
		{DeployConfig{Image: "registry.example.com/team/api:1.4"}, "api"},
		{DeployConfig{Image: "team/app@sha256:" + strings.Repeat("a", 64)}, "app"},
		{DeployConfig{Image: "redis"}, "redis"},
	} {
		if got := tc.cfg.defaultName(); got != tc.want {
			t.Errorf("defaultName(%+v) = %q, want %q", tc.cfg, got, tc.want)
		}
	}
}

// TestReadSourceTellsArchivesByContent: a tar is an image archive whatever
// its name, and is checked before anything is sent.
func TestReadSourceTellsArchivesByContent(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	if err := ociarchive.Write(&buf, ociarchive.Image{Files: []ociarchive.File{{Path: "/app", Mode: 0o755, Data: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "app.bin") // no telling extension
	if err := os.WriteFile(archive, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := &wasmorchv1.WorkloadSpec{Kind: "wasm"}
	b, media, err := readSource(context.Background(), DeployConfig{File: archive}, spec)
	if err != nil {
		t.Fatal(err)
	}
	if media != ociarchive.MediaType || spec.GetKind() != "container" || !bytes.Equal(b, buf.Bytes()) || !strings.HasPrefix(spec.GetModuleDigest(), "sha256:") {
		t.Errorf("readSource(archive) = %d bytes, %q, spec %v", len(b), media, spec)
	}

	truncated := filepath.Join(dir, "cut-oci.tar")
	if err := os.WriteFile(truncated, buf.Bytes()[:1024], 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = readSource(context.Background(), DeployConfig{File: truncated}, &wasmorchv1.WorkloadSpec{})
	if err == nil || !strings.Contains(err.Error(), "cut-oci.tar is not a valid OCI image archive") {
		t.Errorf("readSource(truncated archive) = %v", err)
	}

	spec = &wasmorchv1.WorkloadSpec{Kind: "wasm"}
	b, _, err = readSource(context.Background(), DeployConfig{Image: "team/app:1.0"}, spec)
	if err != nil || b != nil || spec.GetKind() != "container" || spec.GetImage() != "team/app:1.0" || spec.GetModuleDigest() != "" {
		t.Errorf("readSource(--image) = %v, %v, spec %v", b, err, spec)
	}
}

// TestReadSourceConvertsADockerArchive: an archive 'docker save' wrote
// before Docker 25 (no oci-layout) is deployed as the OCI image layout
// archive it converts to, with the same digest each time; it was refused
// with an error that said to use docker save.
func TestReadSourceConvertsADockerArchive(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	archive := ctrtest.DockerArchive(t, bin, "team/app:1.0")
	var digests []string
	for range 2 {
		spec := &wasmorchv1.WorkloadSpec{Kind: "wasm"}
		b, media, err := readSource(context.Background(), DeployConfig{File: archive}, spec)
		if err != nil {
			t.Fatalf("readSource(docker archive) = %v", err)
		}
		if _, err := ociarchive.Inspect(b); err != nil || media != ociarchive.MediaType || spec.GetKind() != "container" {
			t.Fatalf("readSource(docker archive) = %d bytes (%v), %q, spec %v; want an OCI image archive", len(b), err, media, spec)
		}
		digests = append(digests, spec.GetModuleDigest())
	}
	if digests[0] != digests[1] {
		t.Errorf("one Docker archive converted to two digests: %v", digests)
	}
}
