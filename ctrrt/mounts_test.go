package ctrrt_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/ctrtest"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// runToExit starts a container and waits for its exit, returning its output.
func runToExit(t *testing.T, rt interface {
	Start(context.Context, runtimeapi.InstanceSpec) (runtimeapi.Instance, error)
}, spec runtimeapi.InstanceSpec) (runtimeapi.Exit, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out output
	spec.Stdout, spec.Stderr = &out, &out
	inst, err := rt.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst.Done():
	case <-ctx.Done():
		t.Fatalf("the container did not exit; output %q", out.String())
	}
	return inst.Exit(), out.String()
}

// State: a volume and a host mount are bind mounts of the host
// directories the worker gives, writable or read-only: what the container
// writes is in the directory on the node, where a Wasm instance of the
// same volume finds it.
func TestVolumesAndHostMountsAreBindMounts(t *testing.T) {
	f := newFixture(t)
	vol, media := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(vol, "old"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(media, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	exit, out := runToExit(t, f.rt, runtimeapi.InstanceSpec{ID: "mounts-1", Artifact: f.artifact,
		Mounts: []runtimeapi.Mount{{GuestPath: "/data", HostPath: vol}, {GuestPath: "/media", HostPath: media, ReadOnly: true}},
		Args:   []string{"cat", "/data/old", "+/data/new", "/media/hello", "+/media/new"}})
	want := "/data/old: kept\n/data/new: written\n/media/hello: hi\n/media/new: cannot write\n"
	if exit.Code != 0 || out != want {
		t.Fatalf("exit %+v, output %q, want 0 and %q", exit, out, want)
	}
	if b, err := os.ReadFile(filepath.Join(vol, "new")); err != nil || string(b) != "overwritten" {
		t.Errorf("what the container wrote to its volume, on the node: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(media, "new")); !os.IsNotExist(err) {
		t.Errorf("the read-only mount was written to: %v", err)
	}
}

// State: a bounded mount (the scratch space) is a tmpfs of its size: the
// container's write past it fails with ENOSPC, and nothing reaches a host
// directory.
func TestScratchSpaceIsATmpfsOfItsSize(t *testing.T) {
	f := newFixture(t)
	flood := archiveArtifact(t, ctrtest.CImage(t, "scratch")) // testdata/scratch.c, built for Linux
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out output
	inst, err := f.rt.Start(ctx, runtimeapi.InstanceSpec{ID: "scratch-1", Artifact: flood, Stdout: &out, Stderr: &out,
		Mounts: []runtimeapi.Mount{{GuestPath: "/tmp", LimitBytes: 1 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop(ctx, time.Second)
	for !strings.Contains(out.String(), "alive 1\n") {
		select {
		case <-inst.Done():
			t.Fatalf("the flood exited: %+v, output %q", inst.Exit(), out.String())
		case <-ctx.Done():
			t.Fatalf("the flood did not report; output %q", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !strings.HasPrefix(out.String(), "wrote 1048576 bytes to /tmp/fill: No space left on device\n") {
		t.Errorf("the flood says %q, want it stopped at 1 MiB by ENOSPC", out.String())
	}
}

// A mount at a path that is not clean and absolute fails the start for
// good, naming it.
func TestMountAtABadPathIsRefused(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := f.rt.Start(ctx, runtimeapi.InstanceSpec{ID: "bad-1", Artifact: f.artifact, Mounts: []runtimeapi.Mount{{GuestPath: "/data/../etc", HostPath: t.TempDir()}}})
	if err == nil || !strings.Contains(err.Error(), `mount path "/data/../etc" is not a clean absolute path`) {
		t.Fatalf("Start with a mount at /data/../etc: %v", err)
	}
}

// The scratch tmpfs holds as many names as a Wasm instance's scratch
// space: one per 16 KiB of its size, at least 1,024; a flood of empty
// files stops there with ENOSPC.
func TestScratchSpaceBoundsItsNames(t *testing.T) {
	f := newFixture(t)
	many := archiveArtifact(t, ctrtest.CImage(t, "manyfiles")) // testdata/manyfiles.c, built for Linux
	exit, out := runToExit(t, f.rt, runtimeapi.InstanceSpec{ID: "many-1", Artifact: many,
		Mounts: []runtimeapi.Mount{{GuestPath: "/tmp", LimitBytes: 1 << 20}}})
	if exit.Code != 0 || !strings.HasPrefix(out, "made 1024 files: No space left on device\n") {
		t.Errorf("exit %+v, output %q; want 1024 files, then ENOSPC", exit, out)
	}
}
