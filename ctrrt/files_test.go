package ctrrt_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// nobodyImage packs the conformance program into an image whose
// entrypoint runs as nobody (65534), not root.
func nobodyImage(t *testing.T) runtimeapi.Artifact {
	t.Helper()
	bin, err := os.ReadFile(program(t))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := ociarchive.Write(&buf, ociarchive.Image{
		Files:      []ociarchive.File{{Path: "/app", Mode: 0o755, Data: bin}},
		Entrypoint: []string{"/app"},
		Env:        []string{"PATH=/"},
		User:       "65534:65534",
		Arch:       runtime.GOARCH,
	}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nobody-oci.tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return archiveArtifact(t, path)
}

var testFiles = map[string][]byte{
	"/config/app/GREETING": []byte("hello from a file"),
	"/secrets/db/password": []byte("s3cret"),
}

// A container that does not run as root reads its config and secret
// files, and cannot write them.
func TestFilesReadableByANonRootUser(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out output
	inst, err := f.rt.Start(ctx, runtimeapi.InstanceSpec{ID: "nobody-1", Artifact: nobodyImage(t), Files: testFiles, Stdout: &out, Stderr: &out,
		Args: []string{"cat", "/config/app/GREETING", "/secrets/db/password", "+/config/app/GREETING", "+/secrets/db/new"}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst.Done():
	case <-ctx.Done():
		t.Fatalf("the container did not exit; output %q", out.String())
	}
	want := "/config/app/GREETING: hello from a file\n/secrets/db/password: s3cret\n/config/app/GREETING: cannot write\n/secrets/db/new: cannot write\n"
	if e := inst.Exit(); e.Code != 0 || out.String() != want {
		t.Errorf("exit %+v, output %q, want 0 and %q", e, out.String(), want)
	}
	if _, err := os.Stat(filepath.Join(f.d.Dir, "files", "nobody-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the exited container's files are still on the node: %v", err)
	}
}

// The files live in a directory of the instance's own, private to the
// worker, mounted read-only, while the container runs, and go with it.
func TestFilesDirectoryLivesWithTheContainer(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	filesDir := filepath.Join(f.d.Dir, "files")
	inst, err := f.rt.Start(ctx, runtimeapi.InstanceSpec{ID: "files-1", Artifact: f.artifact, Files: testFiles, Args: []string{"sleep"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{filesDir, 0o700 | os.ModeDir},
		{filepath.Join(filesDir, "files-1"), 0o755 | os.ModeDir},
		{filepath.Join(filesDir, "files-1", "secrets", "db"), 0o755 | os.ModeDir},
		{filepath.Join(filesDir, "files-1", "config", "app", "GREETING"), 0o444},
		{filepath.Join(filesDir, "files-1", "secrets", "db", "password"), 0o444},
	} {
		if fi, err := os.Stat(c.path); err != nil || fi.Mode() != c.mode {
			t.Errorf("%s: %v %v, want mode %v", c.path, fi, err, c.mode)
		}
	}
	ctr, err := f.d.Client(t, f.d.Namespace).LoadContainer(ctx, "files-1")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mounted := map[string]bool{}
	for _, m := range spec.Mounts {
		if m.Destination == "/config" || m.Destination == "/secrets" {
			mounted[m.Destination] = slices.Contains(m.Options, "ro")
		}
	}
	if !mounted["/config"] || !mounted["/secrets"] {
		t.Errorf("mounts = %+v, want /config and /secrets read-only", spec.Mounts)
	}

	inst.Stop(ctx, 0)
	if _, err := os.Stat(filepath.Join(filesDir, "files-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stopped container's files are still on the node: %v", err)
	}

	// What a worker that died left behind goes with its unwanted instances.
	stale := filepath.Join(filesDir, "stale-1", "config", "app")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := f.rt.RemoveUnwanted(ctx, map[string]bool{"kept-1": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(filesDir, "stale-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("RemoveUnwanted left a stale files directory: %v", err)
	}
}

// Paths that would not be a mounted directory's files are refused, and
// nothing is written.
func TestFilesWithBadPathsRefused(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/config", "config/app/K", "/config/../etc/K", "/etc/passwd"} {
		_, err := f.rt.Start(context.Background(), runtimeapi.InstanceSpec{ID: "bad-1", Artifact: f.artifact, Args: []string{"sleep"},
			Files: map[string][]byte{p: []byte("x")}})
		var se *runtimeapi.StartError
		if !errors.As(err, &se) || !se.Exit.Permanent {
			t.Errorf("file %q: Start = %v, want a permanent StartError", p, err)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(f.d.Dir, "files")); len(entries) != 0 {
		t.Errorf("refused starts left files: %v", entries)
	}
}

// A restarted worker that adopts a running container leaves its files as
// they are (the container's mounts show them) and removes them once it
// is gone.
func TestAdoptedContainerKeepsItsFiles(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := runtimeapi.InstanceSpec{ID: "adopt-1", Artifact: f.artifact, Files: testFiles, Args: []string{"tick"}}
	if _, err := f.rt.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(f.d.Dir, "files", "adopt-1", "secrets", "db", "password")
	before, err := os.Stat(secret)
	if err != nil {
		t.Fatal(err)
	}

	again := newRuntime(t, f.d)
	if err := again.RemoveUnwanted(ctx, map[string]bool{"adopt-1": true}); err != nil {
		t.Fatal(err)
	}
	inst, err := again.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, adopted := inst.(runtimeapi.Readopted).Readopted(); !adopted {
		t.Fatal("the running container was not adopted")
	}
	if after, err := os.Stat(secret); err != nil || !os.SameFile(before, after) {
		t.Errorf("adopting rewrote or removed the files: %v", err)
	}
	inst.Stop(ctx, 0)
	if _, err := os.Stat(filepath.Join(f.d.Dir, "files", "adopt-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the adopted container's files outlived it: %v", err)
	}
}
