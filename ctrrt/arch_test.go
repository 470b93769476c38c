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
	"time"

	"github.com/wasmorch/wasmorch/ctrrt"
	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/ctrtest"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
	"github.com/wasmorch/wasmorch/worker/runtimeapi/rtconformance"
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

// edge: an image labelled for the node's platform whose program is for
// another machine exited 1 with "exec format error" and was restarted for
// ever. Start reads the ELF header of the program the container would
// execute (here found through the image's PATH) and fails for good with
// WrongArchitecture, leaving no container behind.
func TestForeignBinaryInANativeImageIsWrongArchitecture(t *testing.T) {
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	d := ctrtest.Start(t)
	rt := newRuntime(t, d)
	foreign, err := os.ReadFile(rtconformance.BuildProgram(t, "linux", other))
	if err != nil {
		t.Fatal(err)
	}
	native, err := os.ReadFile(program(t))
	if err != nil {
		t.Fatal(err)
	}
	archive := func(name string, files ...ociarchive.File) runtimeapi.Artifact {
		var buf bytes.Buffer
		if err := ociarchive.Write(&buf, ociarchive.Image{Files: files, Entrypoint: []string{"app"},
			Env: []string{"PATH=/opt/bin:/usr/bin"}, Arch: runtime.GOARCH}); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return archiveArtifact(t, path)
	}
	ctx := context.Background()

	inst, err := rt.Start(ctx, runtimeapi.InstanceSpec{ID: "foreign-1", Artifact: archive("foreign.tar", ociarchive.File{Path: "/opt/bin/app", Mode: 0o755, Data: foreign})})
	var se *runtimeapi.StartError
	if !errors.As(err, &se) || se.Exit.Reason != runtimeapi.ReasonWrongArch || !se.Exit.Permanent ||
		!strings.Contains(se.Exit.Message, "/opt/bin/app is an ELF executable for") ||
		!strings.Contains(se.Exit.Message, "this node is linux/"+runtime.GOARCH) {
		if inst != nil {
			_ = inst.Stop(ctx, 0)
		}
		t.Fatalf("Start = %v, want a permanent WrongArchitecture naming the program and the node", err)
	}
	c := d.Client(t, ctrrt.DefaultConfig().Namespace)
	if _, err := c.LoadContainer(ctx, "foreign-1"); err == nil {
		t.Error("the container of the refused start is left behind")
	}

	// A script whose interpreter is foreign is the same failure.
	_, err = rt.Start(ctx, runtimeapi.InstanceSpec{ID: "foreign-2", Artifact: archive("script.tar",
		ociarchive.File{Path: "/usr/bin/app", Mode: 0o755, Data: []byte("#!/opt/interp -x\nexit 0\n")},
		ociarchive.File{Path: "/opt/interp", Mode: 0o755, Data: foreign})})
	if !errors.As(err, &se) || se.Exit.Reason != runtimeapi.ReasonWrongArch || !strings.Contains(se.Exit.Message, "/opt/interp is an ELF executable") {
		t.Fatalf("Start of a script with a foreign interpreter = %v, want WrongArchitecture", err)
	}

	// The node's own binary in the same image runs.
	inst, err = rt.Start(ctx, runtimeapi.InstanceSpec{ID: "native-1", Artifact: archive("native.tar", ociarchive.File{Path: "/opt/bin/app", Mode: 0o755, Data: native}), Args: []string{"exit", "0"}})
	if err != nil {
		t.Fatalf("Start of the native binary: %v", err)
	}
	select {
	case <-inst.Done():
		if exit := inst.Exit(); exit.Code != 0 {
			t.Errorf("native binary exit = %+v", exit)
		}
	case <-time.After(time.Minute):
		t.Fatal("the native binary did not exit")
	}
}
