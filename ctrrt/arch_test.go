package ctrrt_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/ctrtest"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// edge: an image archive for another platform than the node's fails for
// good with WrongArchitecture, saying which platforms it holds, which the
// worker takes as the node's failure, not the instance's.
func TestImageForAnotherPlatformIsWrongArchitecture(t *testing.T) {
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	d := ctrtest.Start(t)
	rt := newRuntime(t, d)
	bin, err := os.ReadFile(program(t))
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
	err = rt.Prepare(context.Background(), archiveArtifact(t, path), 0)
	var se *runtimeapi.StartError
	if !errors.As(err, &se) || se.Exit.Reason != runtimeapi.ReasonWrongArch || !se.Exit.Permanent ||
		!strings.Contains(se.Exit.Message, "holds linux/"+other+" only; this node is linux/"+runtime.GOARCH) {
		t.Fatalf("Prepare = %v, want a permanent WrongArchitecture naming both platforms", err)
	}
	// The node's own platform is imported as before.
	if err := rt.Prepare(context.Background(), archiveArtifact(t, ctrtest.ImageArchive(t, program(t))), 0); err != nil {
		t.Fatalf("Prepare of the node's own platform: %v", err)
	}
}
