// Package rtconformance is the runtime conformance suite: one set of tests
// that every worker runtime (wasmrt, ctrrt) must pass, so that the worker's
// supervisor can treat them alike. Each runtime's tests build the same Go
// program (testdata/prog) for that runtime — a wasip1 module, or a static
// linux binary in an OCI image — and call Run with it.
package rtconformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// Harness is what Run needs to know about one runtime.
type Harness struct {
	Runtime runtimeapi.Runtime
	// Artifact runs the conformance program under Runtime.
	Artifact runtimeapi.Artifact
	// MemoryLimitReasons are the exit reasons an instance that outgrows its
	// memory limit may end with under this runtime (a Go-wasip1 guest exits
	// with an error when memory.grow fails; a container is OOM-killed).
	MemoryLimitReasons []string
	// Timeout bounds each test's waits (default 2 minutes): a hang fails
	// the test instead of the whole run; it is not a speed check.
	Timeout time.Duration
}

// ProgramDir is the directory of the conformance program's source.
func ProgramDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testdata", "prog")
}

// BuildProgram builds the conformance program for goos/goarch with cgo off
// (static) and returns the binary's path.
func BuildProgram(t testing.TB, goos, goarch string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "prog-"+goos+"-"+goarch)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = ProgramDir()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rtconformance: go build (%s/%s): %v\n%s", goos, goarch, err, b)
	}
	return out
}

// Run runs the suite against h.Runtime.
func Run(t *testing.T, h Harness) {
	if h.Timeout == 0 {
		h.Timeout = 2 * time.Minute
	}
	s := &suite{h: h}
	t.Run("ExitCodes", s.exitCodes)
	t.Run("ArgsAndEnv", s.argsAndEnv)
	t.Run("Logs", s.logs)
	t.Run("StopBusyLoop", s.stopBusyLoop)
	t.Run("StopSleeping", s.stopSleeping)
	t.Run("MemoryLimit", s.memoryLimit)
	t.Run("InvalidSpec", s.invalidSpec)
	t.Run("ReadOnlyFiles", s.readOnlyFiles)
}

type suite struct{ h Harness }

// output is a concurrency-safe writer the tests read back.
type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

type run struct {
	inst     runtimeapi.Instance
	stdout   *output
	stderr   *output
	onExitMu sync.Mutex
	onExits  []runtimeapi.Exit
}

func (r *run) exits() []runtimeapi.Exit {
	r.onExitMu.Lock()
	defer r.onExitMu.Unlock()
	return slices.Clone(r.onExits)
}

func newID(t testing.TB) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return strings.Trim(name, "-") + "-" + hex.EncodeToString(b)
}

func (s *suite) ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// start starts the program with args, failing the test if it cannot, and
// stops it at the end of the test.
func (s *suite) start(t *testing.T, mem int64, env []string, args ...string) *run {
	t.Helper()
	return s.startSpec(t, runtimeapi.InstanceSpec{Args: args, Env: env, MemoryBytes: mem})
}

// startSpec is start with more of the spec: its ID, artifact, output and
// OnExit are filled in.
func (s *suite) startSpec(t *testing.T, spec runtimeapi.InstanceSpec) *run {
	t.Helper()
	r := &run{stdout: &output{}, stderr: &output{}}
	spec.ID, spec.Artifact, spec.Stdout, spec.Stderr = newID(t), s.h.Artifact, r.stdout, r.stderr
	spec.OnExit = func(e runtimeapi.Exit) {
		r.onExitMu.Lock()
		r.onExits = append(r.onExits, e)
		r.onExitMu.Unlock()
	}
	inst, err := s.h.Runtime.Start(s.ctx(t), spec)
	if err != nil {
		t.Fatalf("Start(%v): %v", spec.Args, err)
	}
	if inst.ID() != spec.ID {
		t.Errorf("ID() = %q, want %q", inst.ID(), spec.ID)
	}
	r.inst = inst
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
		defer cancel()
		inst.Stop(ctx, 0)
	})
	return r
}

// wait waits for the run to exit and checks that OnExit was called once,
// with the same Exit that Exit() reports.
func (s *suite) wait(t *testing.T, r *run) runtimeapi.Exit {
	t.Helper()
	select {
	case <-r.inst.Done():
	case <-s.ctx(t).Done():
		t.Fatalf("instance did not exit within %s; output %q %q", s.h.Timeout, r.stdout, r.stderr)
	}
	e := r.inst.Exit()
	got := r.exits()
	if len(got) != 1 {
		t.Fatalf("OnExit was called %d times before Done, want once", len(got))
	}
	if got[0].Code != e.Code || got[0].Reason != e.Reason {
		t.Errorf("OnExit got %+v, Exit() = %+v", got[0], e)
	}
	if e.At.IsZero() {
		t.Errorf("Exit has no time: %+v", e)
	}
	return e
}

// waitOutput waits until the run's stdout contains want.
func (s *suite) waitOutput(t *testing.T, r *run, want string) {
	t.Helper()
	ctx := s.ctx(t)
	for !strings.Contains(r.stdout.String(), want) {
		select {
		case <-r.inst.Done():
			t.Fatalf("instance exited (%+v) before printing %q; stdout %q stderr %q", r.inst.Exit(), want, r.stdout, r.stderr)
		case <-ctx.Done():
			t.Fatalf("instance did not print %q within %s; stdout %q", want, s.h.Timeout, r.stdout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *suite) exitCodes(t *testing.T) {
	for _, tc := range []struct {
		code   int32
		reason string
	}{
		{0, runtimeapi.ReasonCompleted},
		{3, runtimeapi.ReasonError},
		{42, runtimeapi.ReasonError},
	} {
		r := s.start(t, 0, nil, "exit", itoa(tc.code))
		e := s.wait(t, r)
		if e.Code != tc.code || e.Reason != tc.reason {
			t.Errorf("exit %d: got code %d reason %q (%s), want code %d reason %q", tc.code, e.Code, e.Reason, e.Message, tc.code, tc.reason)
		}
		if e.Permanent {
			t.Errorf("exit %d: a program's own exit is not permanent: %+v", tc.code, e)
		}
	}
}

func (s *suite) argsAndEnv(t *testing.T) {
	r := s.start(t, 0, []string{"CONFORMANCE_GREETING=hi there", "OTHER=1"}, "echo", "ana", "two words", "")
	e := s.wait(t, r)
	if e.Code != 0 {
		t.Fatalf("echo exited %+v; stderr %q", e, r.stderr)
	}
	want := "arg:ana\narg:two words\narg:\nenv:hi there\n"
	if got := r.stdout.String(); got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
}

func (s *suite) logs(t *testing.T) {
	r := s.start(t, 0, nil, "exit", "0")
	s.wait(t, r)
	if got := r.stdout.String(); got != "out:hello\n" {
		t.Errorf("stdout = %q, want %q", got, "out:hello\n")
	}
	if got := r.stderr.String(); got != "err:hello\n" {
		t.Errorf("stderr = %q, want %q", got, "err:hello\n")
	}
}

func (s *suite) stopBusyLoop(t *testing.T) { s.stop(t, "spin", "spinning") }
func (s *suite) stopSleeping(t *testing.T) { s.stop(t, "sleep", "sleeping") }

func (s *suite) stop(t *testing.T, cmd, banner string) {
	r := s.start(t, 0, nil, cmd)
	s.waitOutput(t, r, banner)
	select {
	case <-r.inst.Done():
		t.Fatalf("%s exited on its own: %+v", cmd, r.inst.Exit())
	default:
	}
	e := r.inst.Stop(s.ctx(t), 50*time.Millisecond)
	if e.Reason != runtimeapi.ReasonStopped {
		t.Errorf("Stop returned %+v, want reason %q", e, runtimeapi.ReasonStopped)
	}
	if got := s.wait(t, r); got.Reason != runtimeapi.ReasonStopped || got.Code == 0 {
		t.Errorf("after Stop, Exit() = %+v, want a non-zero code with reason %q", got, runtimeapi.ReasonStopped)
	}
	// Stopping again, after the exit, is harmless and reports the same exit.
	if again := r.inst.Stop(s.ctx(t), 0); again.Reason != e.Reason || again.Code != e.Code {
		t.Errorf("second Stop returned %+v, want %+v", again, e)
	}
	if n := len(r.exits()); n != 1 {
		t.Errorf("OnExit called %d times, want once", n)
	}
}

func (s *suite) memoryLimit(t *testing.T) {
	const limit, need = 48 << 20, 160
	small := s.start(t, limit, nil, "alloc", itoa(need))
	e := s.wait(t, small)
	if e.Code == 0 || !slices.Contains(s.h.MemoryLimitReasons, e.Reason) {
		t.Errorf("allocating %d MiB under a %d MiB limit: got %+v, want a non-zero exit with a reason in %v", need, limit>>20, e, s.h.MemoryLimitReasons)
	}
	if strings.Contains(small.stdout.String(), "allocated") {
		t.Errorf("the program allocated %d MiB under a %d MiB limit: %q", need, limit>>20, small.stdout)
	}
	// The same program succeeds with room: the limit, not the program, failed it.
	big := s.start(t, 512<<20, nil, "alloc", itoa(need))
	if e := s.wait(t, big); e.Code != 0 || !strings.Contains(big.stdout.String(), "allocated") {
		t.Errorf("allocating %d MiB under a 512 MiB limit: got %+v, stdout %q stderr %q", need, e, big.stdout, big.stderr)
	}
}

func (s *suite) invalidSpec(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec runtimeapi.InstanceSpec
	}{
		{"no ID", runtimeapi.InstanceSpec{Artifact: s.h.Artifact}},
		{"env without =", runtimeapi.InstanceSpec{ID: newID(t), Artifact: s.h.Artifact, Env: []string{"NOEQUALS"}}},
		{"NUL in an argument", runtimeapi.InstanceSpec{ID: newID(t), Artifact: s.h.Artifact, Args: []string{"a\x00b"}}},
	} {
		inst, err := s.h.Runtime.Start(s.ctx(t), tc.spec)
		var se *runtimeapi.StartError
		if !errors.As(err, &se) {
			if inst != nil {
				inst.Stop(s.ctx(t), 0)
			}
			t.Errorf("%s: Start returned %v, want a *runtimeapi.StartError", tc.name, err)
		}
	}
}

// readOnlyFiles: configs and secrets mounted as files are there, by their
// guest paths, and cannot be written or added to.
func (s *suite) readOnlyFiles(t *testing.T) {
	files := map[string][]byte{
		"/config/app/GREETING": []byte("hello from a file"),
		"/config/app/LEVEL":    []byte("info"),
		"/secrets/db/password": []byte("s3cret"),
	}
	r := s.startSpec(t, runtimeapi.InstanceSpec{Files: files, Args: []string{"cat",
		"/config/app/GREETING", "/config/app/LEVEL", "/secrets/db/password", "/config/app/missing",
		"+/config/app/GREETING", "+/secrets/db/password", "+/config/app/new", "/config/app/GREETING"}})
	if e := s.wait(t, r); e.Code != 0 {
		t.Fatalf("cat exited %+v; stderr %q", e, r.stderr)
	}
	want := "/config/app/GREETING: hello from a file\n/config/app/LEVEL: info\n/secrets/db/password: s3cret\n/config/app/missing: cannot open\n" +
		"/config/app/GREETING: cannot write\n/secrets/db/password: cannot write\n/config/app/new: cannot write\n/config/app/GREETING: hello from a file\n"
	if got := r.stdout.String(); got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	// An instance without files does not see another's.
	other := s.start(t, 0, nil, "cat", "/config/app/GREETING")
	s.wait(t, other)
	if got := other.stdout.String(); got != "/config/app/GREETING: cannot open\n" {
		t.Errorf("an instance without files: stdout = %q", got)
	}
}

func itoa[T ~int32 | ~int](n T) string { return strconv.FormatInt(int64(n), 10) }
