// Package ctrtest gives tests a private containerd: its own config, root,
// state directory and socket under a temporary directory, started and
// stopped by the test, so that neither CI nor a developer needs a system
// containerd service. It also builds the images those tests run: static Go
// binaries packed into OCI image layout archives, with no registry.
// Tests that need it skip, saying why, when containerd, runc or root are
// missing.
package ctrtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
)

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
	pollEvery    = 50 * time.Millisecond
)

// Daemon is a private containerd started for one test.
type Daemon struct {
	Socket string // the gRPC socket clients dial
	Dir    string // holds config, root, state, socket and log
	// Namespace is a containerd namespace of this daemon's own. runc keeps
	// its state under /run/containerd/runc/NAMESPACE and containers get the
	// cgroup /NAMESPACE/ID whatever the daemon's root, so two test runs on
	// one machine that name a container alike collide unless their
	// namespaces differ.
	Namespace string

	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

// Missing reports why a private containerd cannot run here, or "" if it
// can: tests call t.Skip with it.
func Missing() string {
	if runtime.GOOS != "linux" {
		return "containers need Linux"
	}
	if os.Geteuid() != 0 {
		return "containerd needs root (run the tests as root)"
	}
	for _, bin := range []string{"containerd", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Sprintf("%s is not installed (apt-get install containerd runc)", bin)
		}
	}
	return ""
}

// Start starts a private containerd and waits until it serves; the test's
// cleanup removes every container it holds and stops it. It skips the test
// when Missing says containerd cannot run here.
func Start(t testing.TB) *Daemon {
	t.Helper()
	d := Prepare(t)
	if err := d.Run(); err != nil {
		t.Fatalf("ctrtest: %v", err)
	}
	return d
}

// Prepare is Start without starting containerd: its socket path is known,
// nothing answers there until Run.
func Prepare(t testing.TB) *Daemon {
	t.Helper()
	if why := Missing(); why != "" {
		t.Skip("skipping: " + why)
	}
	// A short directory of its own rather than t.TempDir: socket paths must
	// fit in 108 bytes, and test names make t.TempDir long.
	dir, err := os.MkdirTemp("", "wctrd-")
	if err != nil {
		t.Fatalf("ctrtest: %v", err)
	}
	d := &Daemon{Socket: filepath.Join(dir, "containerd.sock"), Dir: dir, log: filepath.Join(dir, "containerd.log"),
		Namespace: "wasmorch-" + strings.TrimPrefix(filepath.Base(dir), "wctrd-")}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("ctrtest: %v", err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("ctrtest: removing %s: %v", dir, err)
		}
		removeNamespaceDirs(d.Namespace)
	})
	return d
}

// Run starts containerd, for the first time or again after Stop (with the
// same root and state), and waits until it serves.
func (d *Daemon) Run() error {
	if d.exited != nil {
		select {
		case <-d.exited:
		default:
			return errors.New("containerd is already running")
		}
	}
	d.exited = make(chan struct{})
	return d.start()
}

func (d *Daemon) start() error {
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(d.Dir, "root"), filepath.Join(d.Dir, "state"), d.Socket, d.Socket+".ttrpc", filepath.Join(d.Dir, "opt"))
	cfgPath := filepath.Join(d.Dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	logf, err := os.Create(d.log)
	if err != nil {
		return err
	}
	defer logf.Close() // The child holds its own descriptor.
	d.cmd = exec.Command("containerd", "--config", cfgPath)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own process group, so that a Ctrl-C meant for the test run does
	// not kill it before the cleanup has removed its containers.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("starting containerd: %w", err)
	}
	go func() {
		_ = d.cmd.Wait() // Its exit is what d.exited reports.
		close(d.exited)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		if err := d.serving(ctx); err == nil {
			return nil
		}
		select {
		case <-d.exited:
			return fmt.Errorf("containerd exited at start: %s", d.logTail())
		case <-ctx.Done():
			return fmt.Errorf("containerd did not serve on %s within %s: %s", d.Socket, startTimeout, d.logTail())
		case <-time.After(pollEvery):
		}
	}
}

func (d *Daemon) serving(ctx context.Context) error {
	if _, err := os.Stat(d.Socket); err != nil {
		return err
	}
	c, err := client.New(d.Socket, client.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	ok, err := c.IsServing(ctx)
	if err == nil && !ok {
		err = errors.New("not serving")
	}
	return err
}

// Client returns a client of the daemon in namespace ns, closed with the test.
func (d *Daemon) Client(t testing.TB, ns string) *client.Client {
	t.Helper()
	c, err := client.New(d.Socket, client.WithDefaultNamespace(ns))
	if err != nil {
		t.Fatalf("ctrtest: client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop removes every container left in every namespace (killing its task
// and removing its snapshot), then stops containerd: SIGTERM, then SIGKILL
// after a grace period. It is safe to call more than once.
func (d *Daemon) Stop() error {
	if d.cmd == nil || d.cmd.Process == nil || d.exited == nil {
		return nil
	}
	select {
	case <-d.exited:
		return nil
	default:
	}
	sweepErr := d.sweep()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	if sweepErr != nil {
		return fmt.Errorf("removing containers left behind: %w", sweepErr)
	}
	return nil
}

// sweep deletes every container in every namespace.
func (d *Daemon) sweep() error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	c, err := client.New(d.Socket)
	if err != nil {
		return err
	}
	defer c.Close()
	nss, err := c.NamespaceService().List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		ctrs, err := c.Containers(nctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, ctr := range ctrs {
			if task, err := ctr.Task(nctx, nil); err == nil {
				_, _ = task.Delete(nctx, client.WithProcessKill)
			}
			if err := ctr.Delete(nctx, client.WithSnapshotCleanup); err != nil {
				errs = append(errs, fmt.Errorf("container %s/%s: %w", ns, ctr.ID(), err))
			}
		}
	}
	return errors.Join(errs...)
}

func (d *Daemon) logTail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// BuildStatic builds the Go package in dir (a path inside this module) as
// a static linux binary (CGO_ENABLED=0) and returns its path.
func BuildStatic(t testing.TB, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(dir))
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ctrtest: go build %s: %v\n%s", dir, err, b)
	}
	return out
}

// CImage compiles the C program testdata/NAME.c of the repository (a
// Wasm module's source, such as volcounter.c) as a static Linux binary
// with the host's C compiler and packs it as an image archive (ImageArchive):
// the same program for both runtimes. It skips the test when there is no
// C compiler.
func CImage(t testing.TB, name string) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skipf("ctrtest: no C compiler to build %s.c for a container: %v", name, err)
	}
	src := filepath.Join(testdataDir(t, ""), "..", "..", "..", "testdata", name+".c")
	out := filepath.Join(t.TempDir(), name)
	if b, err := exec.Command(cc, "-static", "-O2", "-o", out, src).CombinedOutput(); err != nil {
		t.Fatalf("ctrtest: cc -static %s: %v\n%s", src, err, b)
	}
	return ImageArchive(t, out)
}

// ImageArchive packs the binary at bin into an OCI image layout archive
// whose entrypoint runs it as /app, and returns the archive's path.
func ImageArchive(t testing.TB, bin string, env ...string) string {
	t.Helper()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatalf("ctrtest: %v", err)
	}
	var buf bytes.Buffer
	if err := ociarchive.Write(&buf, ociarchive.Image{
		Files:      []ociarchive.File{{Path: "/app", Mode: 0o755, Data: b}},
		Entrypoint: []string{"/app"},
		Env:        append([]string{"PATH=/"}, env...),
		Arch:       runtime.GOARCH,
	}); err != nil {
		t.Fatalf("ctrtest: writing image archive: %v", err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(bin)+"-oci.tar")
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatalf("ctrtest: %v", err)
	}
	return out
}

// HTTPServerImage returns the path of an OCI image archive of a static
// HTTP server that listens on $PORT (testdata/httpserver: it says hello,
// echoes bodies and sleeps on request), for the container-function tests.
func HTTPServerImage(t testing.TB) string {
	t.Helper()
	return ImageArchive(t, BuildStatic(t, testdataDir(t, "httpserver")))
}

// StubbornImage returns the path of an OCI image archive of a static
// program that runs until it is killed, printing "stubborn: got SIGTERM"
// on SIGTERM (testdata/stubborn): a container that takes its whole stop
// grace, for the tests of stopping instances.
func StubbornImage(t testing.TB) string {
	t.Helper()
	return ImageArchive(t, BuildStatic(t, testdataDir(t, "stubborn")))
}

func testdataDir(t testing.TB, name string) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("ctrtest: cannot locate its own source")
	}
	return filepath.Join(filepath.Dir(file), "testdata", name)
}

// removeNamespaceDirs removes what runc leaves of a namespace outside the
// daemon's directory once its containers are gone: its state directory and
// its parent cgroups (one per hierarchy on cgroup v1). Only empty
// directories go: rmdir of a cgroup with a process in it fails.
func removeNamespaceDirs(ns string) {
	dirs := []string{filepath.Join("/run/containerd/runc", ns), filepath.Join("/sys/fs/cgroup", ns)}
	if v1, err := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns)); err == nil {
		dirs = append(dirs, v1...)
	}
	for _, dir := range dirs {
		_ = os.Remove(dir)
	}
}
