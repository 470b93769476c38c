package scale

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stopGrace is how long a stopped process may take before it is killed.
const stopGrace = 30 * time.Second

// proc is one wasmorch process of the benchmark (the server, a
// simulator), its output in a log file shown when the benchmark fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startProc runs `wasmorch args...` in the background; it is stopped when
// the benchmark ends.
func startProc(b *testing.B, name string, env []string, args ...string) *proc {
	b.Helper()
	logFile, err := os.Create(filepath.Join(b.TempDir(), name+".log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close() // The child has its own descriptor.
	cmd := exec.Command(binary, args...)
	cmd.Dir = repoRoot
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logFile.Name(), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	b.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if b.Failed() {
			out, _ := os.ReadFile(p.log)
			b.Logf("%s (wasmorch %s) printed:\n%s", name, strings.Join(args, " "), tail(out, 4000))
		}
	})
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends sig and waits for the process to exit, killing it after
// stopGrace.
func (p *proc) stop(sig syscall.Signal) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// output is what the process printed so far (its last n bytes).
func (p *proc) output() string {
	out, _ := os.ReadFile(p.log)
	return tail(out, 2000)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// benchEnv is the environment the processes run with: the benchmark's,
// without WASMORCH_ settings, with a config home of its own so that a
// developer's config file or credentials cannot leak in.
func benchEnv(b *testing.B) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WASMORCH_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			env = append(env, kv)
		}
	}
	return append(env, "XDG_CONFIG_HOME="+b.TempDir())
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(b *testing.B) string {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// server is the one `wasmorch server` process the benchmark drives.
type server struct {
	*proc
	api     string
	dataDir string
}

// startServer starts `wasmorch server` on a fresh data dir and free ports
// and returns it with a client once its API answers.
func startServer(ctx context.Context, b *testing.B, env []string) (*server, *controlAPI) {
	b.Helper()
	s := &server{api: freeAddr(b), dataDir: b.TempDir()}
	args := []string{"server", "--data-dir", s.dataDir, "--api", s.api, "--http", freeAddr(b), "--metrics-addr", freeAddr(b), "--name", "scale", "--log-level", "warn"}
	// WASMORCH_SCALE_DEBUG_ADDR serves the member's profiler there, to see
	// where it spends its time during a run.
	if addr := os.Getenv("WASMORCH_SCALE_DEBUG_ADDR"); addr != "" {
		args = append(args, "--debug-addr", addr)
	}
	s.proc = startProc(b, "server", env, args...)
	var api *controlAPI
	err := poll(ctx, time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		if !s.running() {
			return false, "", fmt.Errorf("wasmorch server exited: %s", s.output())
		}
		if api == nil {
			a, err := dialAPI(s.api, filepath.Join(s.dataDir, "admin.yaml"))
			if err != nil {
				return false, "no admin credential yet", nil
			}
			api = a
		}
		return api.version(ctx) == nil, "the API does not answer", nil
	})
	if err != nil {
		b.Fatalf("wasmorch server: %v", err)
	}
	b.Cleanup(func() { _ = api.Close() })
	return s, api
}

// rss is the server's resident memory (VmRSS), read without forcing a GC.
func (s *server) rss() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.pid()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", s.pid())
}

// dbSize is the size of the member's etcd database file.
func (s *server) dbSize() (int64, error) {
	fi, err := os.Stat(filepath.Join(s.dataDir, "etcd", "member", "snap", "db"))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// simulator is one `wasmorch simulate` process.
type simulator struct {
	*proc
	nodes []string
}

// startSimulator runs `wasmorch simulate` with n nodes named prefix-0000
// and on, each with slots instance slots.
func startSimulator(b *testing.B, env []string, srv *server, token, prefix string, n, slots, zones int) *simulator {
	b.Helper()
	s := &simulator{proc: startProc(b, "simulate-"+prefix, env, "simulate", "--server", srv.api, "--token", token,
		"--nodes", strconv.Itoa(n), "--name-prefix", prefix, "--data-dir", b.TempDir(),
		"--instances-per-node", strconv.Itoa(slots), "--zones", strconv.Itoa(zones))}
	for i := range n {
		s.nodes = append(s.nodes, fmt.Sprintf("%s-%04d", prefix, i))
	}
	return s
}

// poll calls cond every interval until it says done, fails, or limit has
// passed; cond also says what it saw, for the error. Errors of the calls
// cond makes (a busy control plane timing out) are its to judge: it
// returns them only when they are final.
func poll(ctx context.Context, limit, interval time.Duration, cond func(context.Context) (bool, string, error)) error {
	deadline := time.Now().Add(limit)
	seen := ""
	for {
		done, s, err := cond(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		seen = s
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s (last seen: %s)", limit, seen)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
