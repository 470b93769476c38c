package wasmrt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// segmentsWasm is, assembled by wat2wasm:
//
//	(module
//	  (memory (export "memory") 2)
//	  (data (i32.const 0) "hello")
//	  (data (i32.const 3) "LL")             ;; overlaps: applied in order
//	  (data "passive!")                     ;; passive, used by _start
//	  (data (i32.const 131068) "end!")      ;; the initial memory's last bytes
//	  (data (i32.const 70000) "")
//	  (func (export "_start")
//	    (memory.init 2 (i32.const 100) (i32.const 0) (i32.const 8))
//	    (data.drop 2)
//	    (memory.init 0 (i32.const 200) (i32.const 0) (i32.const 0))))
//
// It has a data count section (memory.init needs one).
const segmentsWasm = "0061736d01000000010401600000030201000503010002071302066d656d6f72790200065f737461727400000c01050a1d011b0041e40041004108fc080200fc090241c80141004100fc0800000b0b2e050041000b0568656c6c6f0041030b024c4c010870617373697665210041fcff070b04656e64210041f0a2040b00"

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPlanImageRefusesWhatItCannotReproduce(t *testing.T) {
	for _, tt := range []struct{ name, wasm, why string }{
		{"imported memory", "0061736d01000000020f0103656e76066d656d6f72790200010b07010041000b0178", "imports its memory"},
		{"segment beyond the initial memory", "0061736d0100000005030100010b0a010041ffff030b027879", "beyond the initial memory"},
		{"offset from a global", "0061736d01000000020a0103656e760167037f0005030100010b07010023000b0178", "non-constant offset"},
		{"no data segments", "0061736d010000000503010001", "no data segments"},
		{"shared memory", "0061736d010000000504010301010b07010041000b0178", "memory limits flags"},
		{"no memory", "0061736d01000000010401600000030201000a040102000b", "defines no memory"},
		{"not wasm", "00617379", "not a WebAssembly"},
		{"truncated section", "0061736d0100000005ff", "malformed section"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := planImage(mustHex(t, tt.wasm))
			if !errors.Is(err, errNoPlan) || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("planImage: %v, want errNoPlan saying %q", err, tt.why)
			}
		})
	}
}

// TestMemoryImageIsTheInitialMemory: an instance of the module without its
// data segments, on a memory from the image, starts with the memory an
// instance of the module as it is starts with, byte for byte; and runs to
// the same memory (memory.init from a kept passive segment).
func TestMemoryImageIsTheInitialMemory(t *testing.T) {
	modules := map[string][]byte{
		"gofn.wasm":     readTestModule(t, "gofn.wasm"),
		"greet.wasm":    readTestModule(t, "greet.wasm"),
		"segments.wasm": mustHex(t, segmentsWasm),
	}
	ctx := context.Background()
	wz := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer wz.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, wz)
	noStart := wazero.NewModuleConfig().WithName("").WithStartFunctions()

	memoryOf := func(t *testing.T, bin []byte, alloc experimental.MemoryAllocator, run bool) []byte {
		t.Helper()
		code, err := wz.CompileModule(ctx, bin)
		if err != nil {
			t.Fatal(err)
		}
		defer code.Close(ctx)
		mod, err := wz.InstantiateModule(experimental.WithMemoryAllocator(ctx, alloc), code, noStart)
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close(ctx)
		if run {
			if _, err := mod.ExportedFunction("_start").Call(ctx); err != nil {
				t.Fatal(err)
			}
		}
		mem, ok := mod.Memory().Read(0, mod.Memory().Size())
		if !ok {
			t.Fatal("memory not readable")
		}
		return bytes.Clone(mem)
	}

	for name, bin := range modules {
		t.Run(name, func(t *testing.T) {
			plan, err := planImage(bin)
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.stripped) >= len(bin) {
				t.Errorf("stripped module of %d bytes, the module %d", len(plan.stripped), len(bin))
			}
			want := memoryOf(t, bin, nil, false)
			if uint64(len(want)) != plan.minBytes {
				t.Fatalf("initial memory %d bytes, plan says %d", len(want), plan.minBytes)
			}
			if !bytes.Equal(plan.image, want[:len(plan.image)]) || bytes.ContainsFunc(want[len(plan.image):], func(r rune) bool { return r != 0 }) {
				t.Fatal("the image differs from the memory the data segments make")
			}
			im, err := newMemImage(plan)
			if errors.Is(err, errNoPlan) {
				t.Skip(err) // no mappings on this system: the plan alone is checked
			}
			if err != nil {
				t.Fatal(err)
			}
			defer im.close()
			if got := memoryOf(t, plan.stripped, im, false); !bytes.Equal(got, want) {
				t.Fatalf("an instance on the image starts with %d bytes that differ from a normal instance's", countDiff(got, want))
			}
			if name == "segments.wasm" {
				want := memoryOf(t, bin, nil, true)
				if string(want[100:108]) != "passive!" || string(want[0:5]) != "helLL" || string(want[131068:]) != "end!" {
					t.Fatalf("the module itself does not do what the test expects: %q %q %q", want[0:5], want[100:108], want[131068:])
				}
				if got := memoryOf(t, plan.stripped, im, true); !bytes.Equal(got, want) {
					t.Fatalf("after _start, %d bytes differ from a normal instance's", countDiff(got, want))
				}
			}
		})
	}
}

func countDiff(a, b []byte) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// TestCGIServeWithMemoryImages serves the same requests through functions
// whose instances start from memory images (every module's, however
// small) and through functions without images, and expects the same
// answers: the CGI protocol, the body, logs, a fresh memory per request
// (counter.wasm answers 1 every time), a busy loop stopped at its timeout,
// traps, exits, streaming, and the memory limit (a Go guest that cannot
// grow its memory dies as it does without an image).
func TestCGIServeWithMemoryImages(t *testing.T) {
	t.Parallel()
	plain := newTestRuntime(t, Config{})
	imaged := newTestRuntime(t, Config{})
	imaged.imageAbove = 0
	_, imageErr := newMemImage(&dataPlan{minBytes: pageSize})
	mappings := imageErr == nil

	type call struct {
		method, target, body string
		timeout              time.Duration
	}
	get := call{method: "GET", target: "/fn/x?who=ana"}
	stopped := call{method: "GET", target: "/fn", timeout: 50 * time.Millisecond}
	for _, tt := range []struct {
		module      string
		memoryBytes int64
		calls       []call
		wantStatus  int
		wantBody    string // "" when the two answers only have to agree
		noData      bool   // no data segments: no image
	}{
		{module: "greet.wasm", calls: []call{get}, wantStatus: 200, wantBody: "hi, ana!\n"},
		{module: "gofn.wasm", calls: []call{get, get, get}, wantStatus: 200, wantBody: "hello from go, ana!\n"},
		{module: "counter.wasm", calls: []call{get, get, get, get}, wantStatus: 200, wantBody: "1\n"},
		{module: "echo.wasm", calls: []call{{method: "POST", target: "/fn/a?x=1", body: strings.Repeat("body ", 3000)}}, wantStatus: 200},
		{module: "loop.wasm", calls: []call{stopped, stopped}, wantStatus: 504, noData: true},
		{module: "spin.wasm", calls: []call{stopped, stopped}, wantStatus: 504},
		{module: "trap.wasm", calls: []call{get}, wantStatus: 500, noData: true},
		{module: "fail.wasm", calls: []call{get}, wantStatus: 500},
		{module: "stream.wasm", calls: []call{get}, wantStatus: 200},
		{module: "badcgi.wasm", calls: []call{get}, wantStatus: 502},
		// gofn grows its memory from 40 to 49 pages: 44 is too few.
		{module: "gofn.wasm", memoryBytes: 44 * pageSize, calls: []call{get, get}, wantStatus: 500},
		{module: "oom.wasm", memoryBytes: 4 << 20, calls: []call{get, get}, wantStatus: 500},
	} {
		t.Run(strings.TrimSuffix(tt.module, ".wasm"), func(t *testing.T) {
			if raceEnabled && tt.module == "gofn.wasm" {
				t.Skip("compiling a 2.8 MB Go module takes minutes under the race detector")
			}
			spec := runtimeapi.FunctionSpec{Env: []string{"GREETING=hi"}, MemoryBytes: tt.memoryBytes}
			fns := map[*Runtime]runtimeapi.Function{}
			a := testArtifactOr(t, tt.module)
			for _, r := range []*Runtime{plain, imaged} {
				fn, err := r.prepareFunction(context.Background(), a, spec, r == imaged)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(fn.Close)
				fns[r] = fn
			}
			if got := fns[imaged].(*function).m.image != nil; got != (mappings && !tt.noData) {
				t.Fatalf("image used: %v, want %v (%v)", got, mappings, imageErr)
			}
			if fns[plain].(*function).m.image != nil {
				t.Fatal("the function without images has one")
			}
			for i, c := range tt.calls {
				answers := map[*Runtime]string{}
				for _, r := range []*Runtime{plain, imaged} {
					req := httptest.NewRequest(c.method, c.target, strings.NewReader(c.body))
					req.Header.Set("X-Echo-Status", "200 OK")
					rec := httptest.NewRecorder()
					var logs bytes.Buffer
					timeout := c.timeout
					if timeout == 0 {
						timeout = safetyTimeout
					}
					res := fns[r].Serve(context.Background(), rec, &runtimeapi.FunctionRequest{
						HTTP: req, Body: req.Body, ScriptName: "/fn", RemoteAddr: "192.0.2.7:5555", Timeout: timeout, Logs: &logs,
					})
					if i == 0 && (rec.Code != tt.wantStatus || tt.wantBody != "" && rec.Body.String() != tt.wantBody) {
						t.Errorf("image %v: %d %q, want %d %q (logs %q)", r == imaged, rec.Code, rec.Body.String(), tt.wantStatus, tt.wantBody, logs.String())
					}
					answers[r] = strings.Join([]string{strconv.Itoa(rec.Code), res.Outcome, rec.Body.String(), logs.String()}, "|")
				}
				if answers[plain] != answers[imaged] {
					t.Errorf("call %d: with an image %q, without %q", i, answers[imaged], answers[plain])
				}
			}
		})
	}

	// Requests at once, each with its own memory from the image.
	fn, err := imaged.PrepareFunction(context.Background(), testArtifact(t, "counter.wasm"), runtimeapi.FunctionSpec{})
	if err != nil {
		t.Fatal(err)
	}
	defer fn.Close()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				rec := httptest.NewRecorder()
				res := fn.Serve(context.Background(), rec, &runtimeapi.FunctionRequest{HTTP: httptest.NewRequest("GET", "/fn", nil), Timeout: safetyTimeout})
				if res.Outcome != runtimeapi.OutcomeOK || rec.Body.String() != "1\n" {
					t.Errorf("got %+v %q, want 1: every request a fresh memory", res, rec.Body.String())
				}
			}
		})
	}
	wg.Wait()
}

// spinWasm is (module (memory 1) (data (i32.const 0) "x")
// (func (export "_start") (loop $l (br $l)))): a busy loop with a data
// segment, so with a memory image.
const spinWasm = "0061736d01000000010401600000030201000503010001070a01065f737461727400000a0901070003400c000b0b0b07010041000b0178"

// testArtifactOr is testArtifact, or spinWasm written to a file for
// "spin.wasm".
func testArtifactOr(t *testing.T, name string) runtimeapi.Artifact {
	if name != "spin.wasm" {
		return testArtifact(t, name)
	}
	bin := mustHex(t, spinWasm)
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, bin, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	return runtimeapi.Artifact{Digest: "sha256:" + hex.EncodeToString(sum[:]), Path: path}
}
