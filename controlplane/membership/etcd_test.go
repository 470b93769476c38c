package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/diskspace"
	"github.com/wasmorch/wasmorch/internal/disktest"
)

// testEtcdConfig is a member of a new cluster of one on dataDir, with a
// certificate of a new CA, its peer listener on a free loopback port.
func testEtcdConfig(t *testing.T, dataDir string) EtcdConfig {
	t.Helper()
	pki := t.TempDir()
	ca, _, err := auth.LoadOrCreateCA(pki)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(auth.Identity{Role: auth.RoleMember, Name: "m1"}, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := EtcdConfig{Name: "m1", DataDir: dataDir, PeerAddr: "127.0.0.1:0",
		CertFile: filepath.Join(pki, "member.crt"), KeyFile: filepath.Join(pki, "member.key"), CAFile: auth.CACertPath(pki)}
	if err := os.WriteFile(cfg.CertFile, append(certPEM, ca.CertPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.KeyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestStartRefusesADiskWithoutRoomForEtcd(t *testing.T) {
	cfg := testEtcdConfig(t, t.TempDir())
	cfg.MinFreeBytes = 1 << 62 // more than any disk has
	e, _, err := StartEtcd(context.Background(), cfg)
	if err == nil {
		e.Close()
		t.Fatal("StartEtcd succeeded, want it refused for lack of room")
	}
	var low *diskspace.LowError
	if !errors.As(err, &low) || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "the disk holding "+cfg.DataDir+" has ") || !strings.Contains(err.Error(), "the embedded etcd needs at least") {
		t.Fatalf("StartEtcd = %q, want one line saying the disk holding the data dir has too little free", err)
	}
	if _, err := os.Stat(Dir(cfg.DataDir)); !os.IsNotExist(err) {
		t.Fatalf("refused, yet etcd's directory was made (%v)", err)
	}
}

// The restart of a member on a full disk: one line, not etcd's own exit
// with a stack trace.
func TestStartOnAFullDiskIsRefusedInOneLine(t *testing.T) {
	dir := disktest.Tmpfs(t, 16<<20)
	disktest.Fill(t, dir, 0)
	e, _, err := StartEtcd(context.Background(), testEtcdConfig(t, dir))
	if err == nil {
		e.Close()
		t.Fatal("StartEtcd on a full disk succeeded")
	}
	if want := "has 0 B free of 16 MiB, and the embedded etcd needs at least 256 MiB"; !strings.Contains(err.Error(), want) {
		t.Fatalf("StartEtcd on a full disk = %q, want it to say %q", err, want)
	}
}

func TestEtcdFailureIsOneLineWithWhatToDo(t *testing.T) {
	var out bytes.Buffer
	exited := -1
	stop := etcdStop{dataDir: "/srv/wo", out: &out, exit: func(code int) { exited = code }}
	lg := zap.New(zapcore.NewNopCore(), zap.WithFatalHook(stop))
	lg.Fatal("failed to commit tx", zap.Error(&os.PathError{Op: "write", Path: "/srv/wo/etcd/member/snap/db", Err: errors.New("no space left on device")}))
	want := "error: the embedded etcd stopped: failed to commit tx: write /srv/wo/etcd/member/snap/db: no space left on device; " +
		"the disk holding /srv/wo is full: free space on it, then start again (instances and workloads are kept in /srv/wo/etcd)\n"
	if out.String() != want || exited != 1 {
		t.Fatalf("Fatal wrote %q and exited %d, want %q and 1", out.String(), exited, want)
	}
}

const fullDiskChildEnv = "WASMORCH_TEST_ETCD_FULL_DISK"

// A member whose disk fills while it runs: etcd cannot go on, and the
// process ends with one line on stderr saying so (run in a child process,
// since it ends the process).
func TestEtcdStoppedByAFullDiskEndsTheProcessWithOneLine(t *testing.T) {
	if dir := os.Getenv(fullDiskChildEnv); dir != "" {
		fillWhileEtcdRuns(t, dir)
		return
	}
	dir := disktest.Tmpfs(t, 320<<20)
	cmd := exec.Command(os.Args[0], "-test.run=^TestEtcdStoppedByAFullDiskEndsTheProcessWithOneLine$", "-test.count=1")
	cmd.Env = append(os.Environ(), fullDiskChildEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("child ended with %v, want exit status 1; stderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "error: the embedded etcd stopped: ") ||
		!strings.Contains(lines[0], "no space left on device") || !strings.Contains(lines[0], "the disk holding "+dir+" is full") {
		t.Fatalf("stderr of a member whose disk filled:\n%s\nwant one line saying etcd stopped because the disk is full", stderr.String())
	}
}

func fillWhileEtcdRuns(t *testing.T, dir string) {
	e, cli, err := StartEtcd(context.Background(), testEtcdConfig(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	disktest.Fill(t, dir, 0)
	value := strings.Repeat("x", 64<<10)
	// Far more than the disk holds: etcd must stop long before the end.
	for i := range 20000 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cli.Put(ctx, fmt.Sprintf("/fill/%d", i), value)
		cancel()
		if err != nil {
			t.Fatalf("put %d: %v (etcd returned an error instead of stopping)", i, err)
		}
	}
	t.Fatal("etcd took 1.2 GB of writes on a full disk of 320 MiB")
}
