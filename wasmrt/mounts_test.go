package wasmrt

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"

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

// Scratch space bounds the names in it (namesFor: 1,024 for 1 MiB),
// counting what was there: creating a file, a directory or a link past it
// fails with ENOSPC, and removing one makes room again. Without a limit
// (a volume) there is no bound.
func TestScratchBoundsTheNumberOfFiles(t *testing.T) {
	r := newTestRuntime(t, Config{})
	dir := t.TempDir()
	const limit = 1 << 20
	if n := namesFor(limit); n != 1024 {
		t.Fatalf("namesFor(1 MiB) = %d, want 1024", n)
	}
	if n := namesFor(64 << 20); n != 4096 {
		t.Fatalf("namesFor(64 MiB) = %d, want 4096", n)
	}
	// What is there counts: a directory with 9 files, and one file: 11 names.
	if err := os.Mkdir(filepath.Join(dir, "old"), 0o700); err != nil {
		t.Fatal(err)
	}
	for i := range 9 {
		if err := os.WriteFile(filepath.Join(dir, "old", strconv.Itoa(i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out := newOutput()
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
		ID: "names", Artifact: testArtifact(t, "manyfiles.wasm"), Stdout: out, Stderr: out,
		Mounts: []runtimeapi.Mount{{GuestPath: "/tmp", HostPath: dir, LimitBytes: limit}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if exit := waitExit(t, inst); exit.Code != 0 {
		t.Fatalf("exit %+v; output:\n%s", exit, out.String())
	}
	want := "made 1013 files: No space left on device\n" +
		"mkdir: No space left on device\nsymlink: No space left on device\nlink: No space left on device\n" +
		"unlink: ok\ncreate again: ok\n"
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	var names int
	err = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if p != dir {
			names++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if names != 1024 {
		t.Errorf("the directory on the node has %d names, want 1024", names)
	}

	// A volume (no limit) has no bound.
	out = newOutput()
	inst, err = r.Start(context.Background(), runtimeapi.InstanceSpec{
		ID: "volume", Artifact: testArtifact(t, "manyfiles.wasm"), Args: []string{"/data", "1500"}, Stdout: out, Stderr: out,
		Mounts: []runtimeapi.Mount{{GuestPath: "/data", HostPath: t.TempDir()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitExit(t, inst)
	if got := out.String(); !strings.HasPrefix(got, "made 1500 files\nmkdir: ok\n") {
		t.Errorf("without a limit: got\n%s", got)
	}
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

// The count of names follows what the guest removes and replaces: rmdir,
// unlink and a rename over a name give theirs back, a rename to a new name
// or over another link of the same file does not change it.
func TestScratchNamesAreGivenBack(t *testing.T) {
	dir := t.TempDir()
	q := &quota{limit: 1 << 20, maxNames: 3}
	fsys := &quotaFS{FS: writableFS(dir), q: q, st: &fsState{}}
	check := func(what string, errno experimentalsys.Errno, want int64) {
		t.Helper()
		if errno != 0 {
			t.Fatalf("%s: %v", what, errno)
		}
		if q.names != want {
			t.Fatalf("after %s: %d names, want %d", what, q.names, want)
		}
	}
	create := func(name string) experimentalsys.Errno {
		f, errno := fsys.OpenFile(name, experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o600)
		if errno == 0 {
			f.Close()
		}
		return errno
	}
	check("mkdir d", fsys.Mkdir("d", 0o700), 1)
	check("create a", create("a"), 2)
	check("open a again with O_CREAT", create("a"), 2)
	check("create d/b", create("d/b"), 3)
	if errno := fsys.Symlink("a", "l"); errno != experimentalsys.EIO || !fsys.st.noSpace.Load() {
		t.Fatalf("a fourth name: %v (noSpace %v), want EIO with noSpace (ENOSPC to the guest)", errno, fsys.st.noSpace.Load())
	}
	check("rename a to c", fsys.Rename("a", "c"), 3)
	check("rename c over d/b", fsys.Rename("c", "d/b"), 2)
	check("link d/b to e", fsys.Link("d/b", "e"), 3)
	check("rename e over d/b, the same file", fsys.Rename("e", "d/b"), 3)
	check("unlink e", fsys.Unlink("e"), 2)
	check("unlink d/b", fsys.Unlink("d/b"), 1)
	check("rmdir d", fsys.Rmdir("d"), 0)
}

// path_readlink into a buffer shorter than the link fills it (wazero's
// fails with ERANGE); the memory readlinkTruncates borrows after the
// buffer is as it was, and the count is written last, even where it lies
// in that memory.
func TestReadlinkTruncatesIntoAShortBuffer(t *testing.T) {
	ctx := context.Background()
	wz := wazero.NewRuntime(ctx)
	defer wz.Close(ctx)
	// A module of one page of memory and nothing else.
	mod, err := wz.Instantiate(ctx, []byte("\x00asm\x01\x00\x00\x00\x05\x03\x01\x00\x01"))
	if err != nil {
		t.Fatal(err)
	}
	const target = "a/longer/target"
	calls := 0
	// As wazero's: ERANGE before writing anything when the buffer is short.
	orig := api.GoModuleFunc(func(_ context.Context, m api.Module, stack []uint64) {
		calls++
		buf, bufLen, result := uint32(stack[3]), uint32(stack[4]), uint32(stack[5])
		if len(target) > int(bufLen) {
			stack[0] = errnoRange
			return
		}
		m.Memory().WriteString(buf, target)
		m.Memory().WriteUint32Le(result, uint32(len(target)))
		stack[0] = 0
	})
	fn := readlinkTruncates(orig)
	mem := mod.Memory()
	for _, tc := range []struct {
		name             string
		buf, len, result uint32
		want             string
	}{
		{"short", 100, 4, 200, "a/lo"},
		{"count inside the borrowed memory", 300, 4, 306, "a/lo"},
		{"long enough", 400, 32, 500, target},
		{"at the end of memory", 65536 - 4, 4, 0, ""},
	} {
		pattern := bytes.Repeat([]byte{0xee}, 64)
		mem.Write(tc.buf, pattern[:min(64, 65536-tc.buf)])
		stack := []uint64{3, 0, 1, uint64(tc.buf), uint64(tc.len), uint64(tc.result)}
		calls = 0
		fn.Call(ctx, mod, stack)
		if tc.want == "" {
			if stack[0] != errnoRange || calls != 1 {
				t.Errorf("%s: errno %d after %d calls, want ERANGE: no memory follows the buffer", tc.name, stack[0], calls)
			}
			continue
		}
		if stack[0] != 0 {
			t.Errorf("%s: errno %d", tc.name, stack[0])
			continue
		}
		got, _ := mem.Read(tc.buf, uint32(len(tc.want)))
		used, _ := mem.ReadUint32Le(tc.result)
		if string(got) != tc.want || used != uint32(len(tc.want)) {
			t.Errorf("%s: buffer %q, bufused %d; want %q, %d", tc.name, got, used, tc.want, len(tc.want))
		}
		after, _ := mem.Read(tc.buf+uint32(len(tc.want)), 64-uint32(len(tc.want)))
		for i, b := range after {
			if tc.buf+uint32(len(tc.want))+uint32(i) == tc.result {
				break // the count is there
			}
			if b != 0xee {
				t.Errorf("%s: the guest's memory after the buffer was changed at +%d", tc.name, len(tc.want)+i)
				break
			}
		}
	}
}
