package wasmrt

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// The WASI preview-1 file-system behaviour of writable mounts is held to
// the file-system tests of the WebAssembly/wasi-testsuite, vendored in
// ../testdata/wasi-testsuite (README.md there says which and from where).
// Each test runs in three ways, in a fresh copy of its fixture directory
// mounted at "/" as the suite's runner mounts it:
//
//   - mount: through the Runtime, with the directory as a writable host
//     mount (`deploy --mount DIR:/`, and named volumes: what the worker asks
//     of the runtime for them);
//   - scratch: the same with a size limit (`--scratch`), the quota's
//     wrapping of the file system;
//   - wazero: as the wazero CLI of the same wazero module runs it
//     (`wazero run -mount=DIR:/`, cmd/wazero), the baseline.
//
// Every test passes except those listed in wasiExpectedFailures, each with
// its reason: a test that starts failing is a regression, and one listed
// that passes must be taken off the list. `go test ./wasmrt -run
// WASITestsuite -v` prints the pass counts (BENCHMARKS.md, docs/storage.md).

const wasiTestsuiteDir = "../testdata/wasi-testsuite"

// wasiExpectedFailures are the tests that fail, by way of running and
// suite/test name, and why.
var wasiExpectedFailures = map[string]map[string]string{
	"mount":   wasiOurFailures,
	"scratch": wasiOurFailures,
	"wazero":  wasiWazeroFailures,
}

// Why tests fail with wazero's WASI (imports/wasi_snapshot_preview1 and
// sysfs.DirFS of wazero v1.12.0), wasmorch's as well as the CLI's. The
// suite's own expectations for wazero skip the same tests
// (expectations/wazero/linux.toml upstream).
const (
	whyRights     = "wazero does not implement WASI rights: fd_fdstat_get reports them all, fd_fdstat_set_rights fails with ENOSYS"
	whyRenumber   = "wazero's fd_renumber refuses to renumber over a preopen or stdio (ENOTSUP) and accepts a closed destination"
	whyPrestat    = "wazero's fd_prestat_dir_name succeeds with a buffer shorter than the name (want EINVAL or ENAMETOOLONG)"
	whySyncFlag   = "wazero's fd_fdstat_get does not report the SYNC flag a file was opened with"
	whyReadlink   = "wazero's path_readlink fails with ERANGE where the buffer is shorter than the link, rather than filling it"
	whyUtimens    = "wazero's path_filestat_set_times follows a symbolic link even without SYMLINK_FOLLOW (its FS has no Lutimens)"
	whyLinkFollow = "wazero's path_link ignores SYMLINK_FOLLOW: it links the dangling symbolic link itself (want EINVAL or ENOENT)"
	whyPwrite     = "wazero's fd_pwrite on a file opened with O_APPEND fails (Go's os.File.WriteAt refuses O_APPEND files)"
)

var wasiWazeroFailures = map[string]string{
	"c/pwrite-with-append":      whyPwrite,
	"rust/dir_fd_op_failures":   whyPrestat,
	"rust/fd_fdstat_set_rights": whyRights,
	"rust/overwrite_preopen":    whyRenumber,
	"rust/path_filestat":        whySyncFlag,
	"rust/path_link":            whyLinkFollow,
	"rust/path_open_read_write": whyRights,
	"rust/readlink":             whyReadlink,
	"rust/renumber":             whyRenumber,
	"rust/stdio":                whyRenumber,
	"rust/symlink_filestat":     whyUtimens,
	"rust/truncation_rights":    whyRights,
}

// wasiOurFailures are wazero's but for what the runtime does otherwise:
// fd_pwrite on an O_APPEND file (beneathFile.Pwrite), path_link with
// SYMLINK_FOLLOW (linkNoFollow) and path_readlink into a short buffer
// (readlinkTruncates).
var wasiOurFailures = map[string]string{
	"rust/dir_fd_op_failures":   whyPrestat,
	"rust/fd_fdstat_set_rights": whyRights,
	"rust/overwrite_preopen":    whyRenumber,
	"rust/path_filestat":        whySyncFlag,
	"rust/path_open_read_write": whyRights,
	"rust/renumber":             whyRenumber,
	"rust/stdio":                whyRenumber,
	"rust/symlink_filestat":     whyUtimens,
	"rust/truncation_rights":    whyRights,
}

// wasiSpec is a test's .json spec, in the suite's legacy form (the only one
// its preview-1 tests use).
type wasiSpec struct {
	Args     []string          `json:"args"`
	Env      map[string]string `json:"env"`
	Root     string            `json:"root"`
	ExitCode int               `json:"exit_code"`
	Stdout   *string           `json:"stdout"`
	Stderr   *string           `json:"stderr"`
}

// wasiTest is one test of the suite.
type wasiTest struct {
	suite, name string // "rust", "path_link"
	wasm        string // path of the module
	spec        wasiSpec
}

func (w wasiTest) id() string { return w.suite + "/" + w.name }

// wasiResult is how a test's run ended.
type wasiResult struct {
	code           int
	stdout, stderr string
	note           string // how it ended, when not by exiting
}

// check reports how r falls short of the spec, or "" if it does not.
func (w wasiTest) check(r wasiResult) string {
	var why []string
	if r.code != w.spec.ExitCode {
		why = append(why, fmt.Sprintf("exit code %d, want %d", r.code, w.spec.ExitCode))
	}
	// The suite's runner reads as many bytes as the spec has and compares.
	if w.spec.Stdout != nil && !strings.HasPrefix(r.stdout, *w.spec.Stdout) {
		why = append(why, fmt.Sprintf("stdout %q, want %q", r.stdout, *w.spec.Stdout))
	}
	if w.spec.Stderr != nil && !strings.HasPrefix(r.stderr, *w.spec.Stderr) {
		why = append(why, fmt.Sprintf("stderr %q, want %q", r.stderr, *w.spec.Stderr))
	}
	if len(why) == 0 {
		return ""
	}
	msg := strings.Join(why, "; ")
	if r.note != "" {
		msg += " (" + r.note + ")"
	}
	if s := strings.TrimSpace(r.stderr); s != "" {
		msg += "\nstderr: " + lastLines(s, 5)
	}
	return msg
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// loadWASITests reads the vendored tests of every suite.
func loadWASITests(t *testing.T) []wasiTest {
	t.Helper()
	var tests []wasiTest
	for _, suite := range []string{"c", "rust"} {
		dir := filepath.Join(wasiTestsuiteDir, suite)
		mods, err := filepath.Glob(filepath.Join(dir, "*.wasm"))
		if err != nil {
			t.Fatal(err)
		}
		if len(mods) == 0 {
			t.Fatalf("no tests in %s", dir)
		}
		for _, mod := range mods {
			w := wasiTest{suite: suite, name: strings.TrimSuffix(filepath.Base(mod), ".wasm"), wasm: mod}
			b, err := os.ReadFile(strings.TrimSuffix(mod, ".wasm") + ".json")
			switch {
			case errors.Is(err, fs.ErrNotExist): // the defaults: no args, no directory, exit 0
			case err != nil:
				t.Fatal(err)
			default:
				dec := json.NewDecoder(bytes.NewReader(b))
				dec.DisallowUnknownFields() // a key this runner does not know would be ignored
				if err := dec.Decode(&w.spec); err != nil {
					t.Fatalf("%s: spec: %v", w.id(), err)
				}
			}
			tests = append(tests, w)
		}
	}
	return tests
}

// fixture copies the test's root directory to a fresh temporary one and
// returns it, or "" for a test without one.
func (w wasiTest) fixture(t *testing.T) string {
	t.Helper()
	if w.spec.Root == "" {
		return ""
	}
	src := filepath.Join(wasiTestsuiteDir, w.suite, w.spec.Root)
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	return dst
}

func (w wasiTest) env() []string {
	env := make([]string, 0, len(w.spec.Env))
	for k, v := range w.spec.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// runWasmorch runs the test through the Runtime, its directory mounted
// writable at "/", with a limit of limit bytes if positive.
func runWasmorch(t *testing.T, r *Runtime, w wasiTest, limit int64) wasiResult {
	t.Helper()
	bin, err := os.ReadFile(w.wasm)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	var stdout, stderr bytes.Buffer
	spec := runtimeapi.InstanceSpec{
		ID:       w.name,
		Artifact: runtimeapi.Artifact{Digest: "sha256:" + hex.EncodeToString(sum[:]), Path: w.wasm},
		Args:     w.spec.Args,
		Env:      w.env(),
		Stdout:   &stdout,
		Stderr:   &stderr,
	}
	if dir := w.fixture(t); dir != "" {
		spec.Mounts = []runtimeapi.Mount{{GuestPath: "/", HostPath: dir, LimitBytes: limit}}
	}
	inst, err := r.Start(context.Background(), spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	exit := waitExit(t, inst)
	res := wasiResult{code: int(exit.Code), stdout: stdout.String(), stderr: stderr.String()}
	if exit.Reason != runtimeapi.ReasonCompleted && exit.Reason != runtimeapi.ReasonError {
		res.note = exit.Reason + ": " + exit.Message
	}
	return res
}

// runWazeroCLI runs the test as `wazero run -mount=DIR:/ test.wasm ARGS`
// does (wazero's cmd/wazero, same module version): a runtime of its own,
// WASI preview 1, the directory preopened with sysfs.DirFS, the process's
// clocks and randomness, and an empty stdin (the suite's runner gives a
// pipe). cache only spares compiling a module twice, as the CLI's
// -cachedir does.
func runWazeroCLI(t *testing.T, cache wazero.CompilationCache, w wasiTest) wasiResult {
	t.Helper()
	ctx := context.Background()
	bin, err := os.ReadFile(w.wasm)
	if err != nil {
		t.Fatal(err)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(cache))
	defer rt.Close(ctx)
	fsc := wazero.NewFSConfig()
	if dir := w.fixture(t); dir != "" {
		fsc = fsc.(sysfs.FSConfig).WithSysFSMount(sysfs.DirFS(dir), "/")
	}
	var stdout, stderr bytes.Buffer
	conf := wazero.NewModuleConfig().
		WithStdout(&stdout).
		WithStderr(&stderr).
		WithStdin(bytes.NewReader(nil)).
		WithRandSource(rand.Reader).
		WithFSConfig(fsc).
		WithSysNanosleep().
		WithSysNanotime().
		WithSysWalltime().
		WithArgs(append([]string{w.wasm}, w.spec.Args...)...)
	for _, kv := range w.env() {
		k, v, _ := strings.Cut(kv, "=")
		conf = conf.WithEnv(k, v)
	}
	guest, err := rt.CompileModule(ctx, bin)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	_, err = rt.InstantiateModule(ctx, guest, conf)
	res := wasiResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *sys.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = int(exitErr.ExitCode())
	default: // the CLI prints the error and exits 1
		res.code = 1
		res.note = firstLine(err)
	}
	return res
}

func TestWASITestsuite(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every test of the suite three times")
	}
	tests := loadWASITests(t)
	r := newTestRuntime(t, Config{})
	cache := wazero.NewCompilationCache()
	t.Cleanup(func() { _ = cache.Close(context.Background()) })
	runs := []struct {
		name, what string
		run        func(*testing.T, wasiTest) wasiResult
	}{
		{"mount", "wasmorch --mount DIR:/ (writable host mount, volumes)", func(t *testing.T, w wasiTest) wasiResult { return runWasmorch(t, r, w, 0) }},
		{"scratch", "wasmorch with a 64 MiB limit (--scratch)", func(t *testing.T, w wasiTest) wasiResult { return runWasmorch(t, r, w, 64<<20) }},
		{"wazero", "wazero CLI (wazero run -mount=DIR:/), baseline", func(t *testing.T, w wasiTest) wasiResult { return runWazeroCLI(t, cache, w) }},
	}
	passed := map[string]int{}
	for _, run := range runs {
		expected := wasiExpectedFailures[run.name]
		for id := range expected {
			if !slices.ContainsFunc(tests, func(w wasiTest) bool { return w.id() == id }) {
				t.Errorf("%s: expected failure %s is not a test of the suite", run.name, id)
			}
		}
		for _, w := range tests {
			t.Run(run.name+"/"+w.id(), func(t *testing.T) {
				why := w.check(run.run(t, w))
				reason, listed := expected[w.id()]
				if why == "" {
					passed[run.name]++
				}
				switch {
				case why == "" && listed:
					t.Errorf("passes now: take it off wasiExpectedFailures[%q] (it said: %s)", run.name, reason)
				case why == "":
				case listed:
					t.Logf("fails, as expected (%s): %s", reason, why)
				default:
					t.Errorf("fails: %s", why)
				}
			})
		}
	}
	for _, run := range runs {
		t.Logf("wasi-testsuite (%d file-system tests, C and Rust, wasm32-wasip1): %s: %d passed", len(tests), run.what, passed[run.name])
	}
}
