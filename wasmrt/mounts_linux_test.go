package wasmrt

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
)

// beneathFixture is a writable mount's directory, <outer>/mnt, next to a
// host file <outer>/secret that no path of the mount may reach.
func beneathFixture(t *testing.T) (fsys experimentalsys.FS, outer, dir string) {
	t.Helper()
	outer = t.TempDir()
	dir = filepath.Join(outer, "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outer, "secret"), []byte("host"), 0o600); err != nil {
		t.Fatal(err)
	}
	return writableFS(dir), outer, dir
}

func readAll(t *testing.T, fsys experimentalsys.FS, name string) (string, experimentalsys.Errno) {
	t.Helper()
	f, errno := fsys.OpenFile(name, experimentalsys.O_RDONLY, 0)
	if errno != 0 {
		return "", errno
	}
	defer f.Close()
	buf := make([]byte, 64)
	n, errno := f.Read(buf)
	return string(buf[:n]), errno
}

func must(t *testing.T, what string, errno experimentalsys.Errno) {
	t.Helper()
	if errno != 0 {
		t.Fatalf("%s: %v", what, errno)
	}
}

// Links inside the mount work as links do: to a file, to a directory, with
// ".." that stays inside.
func TestBeneathFSFollowsLinksThatStayInside(t *testing.T) {
	fsys, _, _ := beneathFixture(t)
	must(t, "mkdir a", fsys.Mkdir("a", 0o700))
	must(t, "mkdir a/b", fsys.Mkdir("a/b", 0o700))
	f, errno := fsys.OpenFile("a/b/f", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o600)
	must(t, "create a/b/f", errno)
	if _, errno := f.Write([]byte("inside")); errno != 0 {
		t.Fatal(errno)
	}
	must(t, "close", f.Close())
	must(t, "symlink", fsys.Symlink("a/b/f", "lf"))
	must(t, "symlink", fsys.Symlink("a", "la"))
	must(t, "symlink", fsys.Symlink("../../lf", "a/b/up"))
	for _, name := range []string{"lf", "la/b/f", "a/b/up", "la/b/up"} {
		if got, errno := readAll(t, fsys, name); errno != 0 || got != "inside" {
			t.Errorf("read %s = %q, %v; want \"inside\"", name, got, errno)
		}
	}
	if st, errno := fsys.Stat("la/b"); errno != 0 || !st.Mode.IsDir() {
		t.Errorf("stat la/b = %v, %v; want a directory", st.Mode, errno)
	}
	if st, errno := fsys.Lstat("la"); errno != 0 || st.Mode&fs.ModeSymlink == 0 {
		t.Errorf("lstat la = %v, %v; want a link", st.Mode, errno)
	}
	if target, errno := fsys.Readlink("a/b/up"); errno != 0 || target != "../../lf" {
		t.Errorf("readlink a/b/up = %q, %v", target, errno)
	}
	must(t, "create through a link to a directory", fsys.Mkdir("la/c", 0o700))
	must(t, "rename through links", fsys.Rename("la/c", "la/b/c"))
	must(t, "unlink through a link", fsys.Unlink("la/b/up"))
}

// No link, however it came to point out of the mount, takes an operation
// there: one the operator left (absolute or relative), one that points out
// only through another link, one moved to where its target is out, one
// that dangles out (O_CREAT does not create its target).
func TestBeneathFSKeepsEveryOperationInside(t *testing.T) {
	fsys, outer, dir := beneathFixture(t)
	// What a guest cannot make, the operator may have left in a host mount.
	if err := os.Symlink("..", filepath.Join(dir, "opdir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outer, "secret"), filepath.Join(dir, "abs")); err != nil {
		t.Fatal(err)
	}
	// Made by the guest: each link, where it was made, pointed inside.
	must(t, "mkdir a", fsys.Mkdir("a", 0o700))
	must(t, "mkdir a/b", fsys.Mkdir("a/b", 0o700))
	must(t, "symlink a/b/s", fsys.Symlink("../..", "a/b/s")) // the mount's root
	must(t, "symlink a/b/t", fsys.Symlink("s/..", "a/b/t"))  // the root's parent, through s
	must(t, "symlink a/b/m", fsys.Symlink("../../secret", "a/b/m"))
	must(t, "rename a/b/m", fsys.Rename("a/b/m", "m")) // now ../secret
	must(t, "symlink c", fsys.Symlink("../created", "c"))
	if errno := fsys.Symlink(filepath.Join(outer, "secret"), "abs2"); errno != experimentalsys.EPERM {
		t.Errorf("symlink to an absolute path: %v, want EPERM", errno)
	}

	for _, name := range []string{"opdir/secret", "abs", "a/b/t/secret", "m"} {
		if got, errno := readAll(t, fsys, name); errno != experimentalsys.EPERM {
			t.Errorf("read %s = %q, %v; want EPERM", name, got, errno)
		}
		if _, errno := fsys.Stat(name); errno != experimentalsys.EPERM {
			t.Errorf("stat %s: %v, want EPERM", name, errno)
		}
		if errno := fsys.Chmod(name, 0o777); errno != experimentalsys.EPERM {
			t.Errorf("chmod %s: %v, want EPERM", name, errno)
		}
		if errno := fsys.Utimens(name, 0, 0); errno != experimentalsys.EPERM {
			t.Errorf("utimens %s: %v, want EPERM", name, errno)
		}
	}
	if _, errno := fsys.OpenFile("c", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o600); errno != experimentalsys.EPERM {
		t.Errorf("create through a link that dangles out: %v, want EPERM", errno)
	}
	if _, errno := fsys.OpenFile("opdir/new", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o600); errno != experimentalsys.EPERM {
		t.Errorf("create through a link to the parent: %v, want EPERM", errno)
	}
	for what, errno := range map[string]experimentalsys.Errno{
		"mkdir":          fsys.Mkdir("opdir/newdir", 0o700),
		"unlink":         fsys.Unlink("opdir/secret"),
		"rename from":    fsys.Rename("opdir/secret", "stolen"),
		"rename to":      fsys.Rename("a", "a/b/t/planted"),
		"link from":      fsys.Link("opdir/secret", "hard"),
		"link to":        fsys.Link("a/b/s", "opdir/planted"),
		"symlink":        fsys.Symlink("x", "a/b/t/planted"),
		"rmdir":          fsys.Rmdir("opdir/mnt"),
		"lstat":          func() experimentalsys.Errno { _, e := fsys.Lstat("opdir/secret"); return e }(),
		"readlink":       func() experimentalsys.Errno { _, e := fsys.Readlink("opdir/mnt/abs"); return e }(),
		"stat of a dir":  func() experimentalsys.Errno { _, e := fsys.Stat("a/b/t"); return e }(),
		"open of a dir":  func() experimentalsys.Errno { _, e := fsys.OpenFile("opdir", experimentalsys.O_RDONLY, 0); return e }(),
		"open of a dir2": func() experimentalsys.Errno { _, e := fsys.OpenFile("a/b/t", experimentalsys.O_RDONLY, 0); return e }(),
	} {
		if errno != experimentalsys.EPERM {
			t.Errorf("%s out of the mount: %v, want EPERM", what, errno)
		}
	}
	if b, err := os.ReadFile(filepath.Join(outer, "secret")); err != nil || string(b) != "host" {
		t.Errorf("the host's file: %q, %v", b, err)
	}
	entries, err := os.ReadDir(outer)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("the host directory has %d entries, want mnt and secret only", len(entries))
	}
	if _, err := os.Stat(filepath.Join(outer, "created")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file was created out of the mount: %v", err)
	}
}

// pwrite on a file opened with O_APPEND appends (Linux's pwrite(2)), where
// wazero's fails: WASI allows either.
func TestBeneathFSPwriteOnAnAppendFile(t *testing.T) {
	fsys, _, dir := beneathFixture(t)
	f, errno := fsys.OpenFile("log", experimentalsys.O_CREAT|experimentalsys.O_WRONLY|experimentalsys.O_APPEND, 0o600)
	must(t, "open", errno)
	defer f.Close()
	if _, errno := f.Write([]byte("ab")); errno != 0 {
		t.Fatal(errno)
	}
	if n, errno := f.Pwrite([]byte("cd"), 0); errno != 0 || n != 2 {
		t.Fatalf("pwrite = %d, %v", n, errno)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "log")); string(b) != "abcd" {
		t.Errorf("file = %q, want abcd", b)
	}
}

// BenchmarkMountOpen opens and closes a file three directories deep, and
// stats it, through a writable mount's file system (beneathFS: openat2
// beneath the directory, then wazero's DirFS through /proc/self/fd) and
// through wazero's DirFS alone, the baseline, in the same run.
func BenchmarkMountOpen(b *testing.B) {
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a", "b", "c"), 0o700); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a", "b", "c", "f"), []byte("x"), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, fsys := range []struct {
		name string
		fs   experimentalsys.FS
	}{{"beneath", writableFS(dir)}, {"dirfs", sysfs.DirFS(dir)}} {
		b.Run(fsys.name+"/open-close", func(b *testing.B) {
			for b.Loop() {
				f, errno := fsys.fs.OpenFile("a/b/c/f", experimentalsys.O_RDONLY, 0)
				if errno != 0 {
					b.Fatal(errno)
				}
				f.Close()
			}
		})
		b.Run(fsys.name+"/stat", func(b *testing.B) {
			for b.Loop() {
				if _, errno := fsys.fs.Stat("a/b/c/f"); errno != 0 {
					b.Fatal(errno)
				}
			}
		})
	}
}
