package wasmrt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// safetyTimeout fails a test that waits too long; it is never a performance
// assertion.
const safetyTimeout = 10 * time.Second

func newTestRuntime(t testing.TB, cfg Config) *Runtime {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = t.TempDir()
	}
	r, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// testArtifact is a module of ../testdata with its digest.
func testArtifact(t testing.TB, name string) runtimeapi.Artifact {
	t.Helper()
	path := filepath.Join("..", "testdata", name)
	bin, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read test module: %v", err)
	}
	sum := sha256.Sum256(bin)
	return runtimeapi.Artifact{Digest: "sha256:" + hex.EncodeToString(sum[:]), Path: path}
}

func readTestModule(t testing.TB, name string) []byte {
	t.Helper()
	bin, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatalf("read test module: %v", err)
	}
	return bin
}

// waitExit waits for an instance to end, failing the test after the
// safety timeout.
func waitExit(t testing.TB, inst runtimeapi.Instance) runtimeapi.Exit {
	t.Helper()
	select {
	case <-inst.Done():
		return inst.Exit()
	case <-time.After(safetyTimeout):
		t.Fatalf("instance %s still running after %v", inst.ID(), safetyTimeout)
		return runtimeapi.Exit{}
	}
}

// stopInstance stops an instance, failing the test after the safety timeout.
func stopInstance(t testing.TB, inst runtimeapi.Instance) runtimeapi.Exit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	exit := inst.Stop(ctx, time.Second)
	if ctx.Err() != nil {
		t.Fatalf("instance %s did not stop within %v", inst.ID(), safetyTimeout)
	}
	return exit
}

// output collects what an instance writes, for a test to read while the
// instance still runs. waitFor blocks until the output contains a string.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced at every write
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

func (o *output) waitFor(t testing.TB, want string) {
	t.Helper()
	deadline := time.After(safetyTimeout)
	for {
		o.mu.Lock()
		found, changed := strings.Contains(o.buf.String(), want), o.changed
		o.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("output never contained %q; got %q", want, o.String())
		}
	}
}
