package wasmrt

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// startScratch starts scratch.wasm with a writable /tmp at dir limited to
// limit bytes (0: none), writing at most most bytes (-1: until a write
// fails).
func startScratch(t *testing.T, r *Runtime, id, dir string, limit int64, args ...string) (runtimeapi.Instance, *output) {
	t.Helper()
	out := newOutput()
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
		ID: id, Artifact: testArtifact(t, "scratch.wasm"), Args: args, Stdout: out, Stderr: out,
		Mounts: []runtimeapi.Mount{{GuestPath: "/tmp", HostPath: dir, LimitBytes: limit}},
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stopInstance(t, inst) })
	return inst, out
}

func TestScratchWritesStopAtTheLimitWithENOSPC(t *testing.T) {
	r := newTestRuntime(t, Config{})
	dir := t.TempDir()
	const limit = 1<<20 + 1000 // not a whole number of the guest's 64 KiB writes
	_, out := startScratch(t, r, "flood", dir, limit)
	out.waitFor(t, "wrote 1049576 bytes to /tmp/fill: No space left on device\n")
	info, err := os.Stat(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() != limit {
		t.Errorf("the file on the node has %d bytes, want the limit, %d", info.Size(), limit)
	}
	out.waitFor(t, "alive 1\n") // still running after the failed write
}

func TestScratchWithoutALimitTakesWhatItWrites(t *testing.T) {
	r := newTestRuntime(t, Config{})
	dir := t.TempDir()
	_, out := startScratch(t, r, "some", dir, 0, "3000000")
	out.waitFor(t, "wrote 3000000 bytes to /tmp/fill\n")
}

func TestScratchQuotaCountsWhatIsAlreadyThereAndWhatIsFreed(t *testing.T) {
	r := newTestRuntime(t, Config{})
	dir := t.TempDir()
	// 600 KB already in the directory count against 1 MB; the guest's
	// O_TRUNC of its own file gives back what that file had.
	if err := os.WriteFile(filepath.Join(dir, "old"), make([]byte, 600_000), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fill"), make([]byte, 300_000), 0o600); err != nil {
		t.Fatal(err)
	}
	_, out := startScratch(t, r, "quota", dir, 1_000_000)
	out.waitFor(t, "wrote 400000 bytes to /tmp/fill: No space left on device\n")
}

func TestScratchNeighboursHaveTheirOwnLimits(t *testing.T) {
	r := newTestRuntime(t, Config{})
	_, flood := startScratch(t, r, "flood", t.TempDir(), 256<<10)
	_, calm := startScratch(t, r, "calm", t.TempDir(), 1<<20, "500000")
	flood.waitFor(t, "wrote 262144 bytes to /tmp/fill: No space left on device\n")
	calm.waitFor(t, "wrote 500000 bytes to /tmp/fill\n")
	calm.waitFor(t, "alive 1\n")
}

// A guest cannot leave a writable mount through a symbolic link it makes:
// a relative link out of the directory is made, but opening through it
// fails (wazero's DirFS would follow it to the host's files), and an
// absolute one is refused. Where there is no openat2 (not Linux), making a
// link at all is refused.
func TestWritableMountsKeepSymbolicLinksInside(t *testing.T) {
	r := newTestRuntime(t, Config{})
	want := "symlink /tmp/up: made\nopen /tmp/up/etc/hostname: Operation not permitted\n" +
		"symlink /tmp/root: Operation not permitted\nopen /tmp/root/etc/hostname: No such file or directory\n"
	if runtime.GOOS != "linux" {
		want = "symlink /tmp/up: Operation not permitted\nopen /tmp/up/etc/hostname: No such file or directory\n" +
			"symlink /tmp/root: Operation not permitted\nopen /tmp/root/etc/hostname: No such file or directory\n"
	}
	for _, limit := range []int64{0, 1 << 20} {
		out := newOutput()
		inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
			ID: "escape", Artifact: testArtifact(t, "escape.wasm"), Stdout: out, Stderr: out,
			Mounts: []runtimeapi.Mount{{GuestPath: "/tmp", HostPath: t.TempDir(), LimitBytes: limit}},
		})
		if err != nil {
			t.Fatal(err)
		}
		waitExit(t, inst)
		if got := out.String(); got != want {
			t.Errorf("limit %d: got\n%s\nwant\n%s", limit, got, want)
		}
	}
}

// A read-only mount is resolved beneath its directory as well: a link that
// leads out of it, made there through another workload's writable mount of
// the same directory, leads nowhere, while the mount's own files read.
func TestReadOnlyMountsKeepSymbolicLinksInside(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("links out of a mount are refused when made, not when followed, where there is no openat2")
	}
	r := newTestRuntime(t, Config{})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("inside"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../../..", filepath.Join(dir, "up")); err != nil {
		t.Fatal(err)
	}
	out := newOutput()
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
		ID: "cat", Artifact: testArtifact(t, "cat.wasm"), Stdout: out, Stderr: out,
		Args:   []string{"/ro/f", "/ro/up/etc/hostname", "+/ro/g"},
		Mounts: []runtimeapi.Mount{{GuestPath: "/ro", HostPath: dir, ReadOnly: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitExit(t, inst)
	want := "/ro/f: inside\n/ro/up/etc/hostname: cannot open\n/ro/g: cannot write\n"
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
