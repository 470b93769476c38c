package wasmrt

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

func TestCGIHeaderParsing(t *testing.T) {
	tests := []struct {
		name       string
		block      string
		wantStatus int
		wantHeader map[string]string
		wantErr    string
	}{
		{name: "content type only", block: "Content-Type: text/plain\n", wantStatus: 200, wantHeader: map[string]string{"Content-Type": "text/plain"}},
		{name: "CRLF lines", block: "Content-Type: text/html\r\nX-A: b\r\n", wantStatus: 200, wantHeader: map[string]string{"Content-Type": "text/html", "X-A": "b"}},
		{name: "status with reason", block: "Status: 201 Created\nContent-Type: text/plain\n", wantStatus: 201},
		{name: "status code alone", block: "status: 404\n", wantStatus: 404},
		{name: "location redirects", block: "Location: /elsewhere\n", wantStatus: 302, wantHeader: map[string]string{"Location": "/elsewhere"}},
		{name: "location with status", block: "Status: 301 Moved\nLocation: /x\n", wantStatus: 301},
		{name: "values trimmed", block: "X-Pad:   v  \n", wantStatus: 200, wantHeader: map[string]string{"X-Pad": "v"}},
		{name: "no colon", block: "hello world\n", wantErr: `"hello world" is not "Name: value"`},
		{name: "space in name", block: "Bad Name: x\n", wantErr: "invalid name"},
		{name: "empty name", block: ": x\n", wantErr: "invalid name"},
		{name: "status not a number", block: "Status: OK\n", wantErr: "not a 3-digit HTTP status"},
		{name: "status out of range", block: "Status: 700 Nope\n", wantErr: "not a 3-digit HTTP status"},
		{name: "status twice", block: "Status: 200\nStatus: 201\n", wantErr: "twice"},
		{name: "informational status", block: "Status: 101 Switching Protocols\nUpgrade: h2c\n", wantErr: "not a final HTTP status"},
		{name: "content length dropped", block: "Content-Type: text/plain\nContent-Length: 2\n", wantStatus: 200, wantHeader: map[string]string{"Content-Type": "text/plain", "Content-Length": ""}},
		{name: "no headers", block: "\n", wantErr: "no CGI headers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			end, _ := headerEnd([]byte(tt.block + "\n"))
			if end < 0 {
				t.Fatalf("headerEnd found no end in %q", tt.block+"\n")
			}
			h, status, err := parseCGIHeaders([]byte(tt.block + "\n")[:end])
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if status != tt.wantStatus {
				t.Errorf("status = %d, want %d", status, tt.wantStatus)
			}
			for k, v := range tt.wantHeader {
				if got := h.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if h.Get("Status") != "" {
				t.Errorf("Status passed through as a header")
			}
		})
	}
}

func TestCGIHeaderEnd(t *testing.T) {
	tests := []struct {
		in          string
		end, bodyAt int
	}{
		{"A: b\n\nbody", 5, 6},
		{"A: b\r\n\r\nbody", 6, 8},
		{"\nbody", 0, 1},
		{"A: b\nC: d\n", -1, -1},
		{"A: b", -1, -1},
	}
	for _, tt := range tests {
		end, bodyAt := headerEnd([]byte(tt.in))
		if end != tt.end || bodyAt != tt.bodyAt {
			t.Errorf("headerEnd(%q) = %d, %d; want %d, %d", tt.in, end, bodyAt, tt.end, tt.bodyAt)
		}
	}
}

// TestCGIWriterSplitWrites feeds the output a byte at a time: the headers
// are found wherever the writes split them.
func TestCGIWriterSplitWrites(t *testing.T) {
	rec := httptest.NewRecorder()
	c := &cgiWriter{w: rec, flusher: rec}
	for _, b := range []byte("Status: 418 Teapot\r\nX-A: 1\r\n\r\nshort and stout") {
		if _, err := c.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	if c.bad != nil || !c.sent {
		t.Fatalf("bad = %v, sent = %v", c.bad, c.sent)
	}
	if rec.Code != 418 || rec.Header().Get("X-A") != "1" || rec.Body.String() != "short and stout" {
		t.Errorf("got %d %v %q", rec.Code, rec.Header(), rec.Body.String())
	}
}

func TestCGIWriterHeaderLimit(t *testing.T) {
	c := &cgiWriter{w: httptest.NewRecorder()}
	line := []byte("X-Long: " + strings.Repeat("a", 1000) + "\n")
	for i := 0; i < maxCGIHeaderBytes/len(line)+2; i++ {
		_, _ = c.Write(line)
	}
	if c.bad == nil || !strings.Contains(c.bad.Error(), "no blank line") {
		t.Fatalf("bad = %v, want the header limit", c.bad)
	}
}

// TestCGIWriterHoldsOnlyTheHeaders: output written in one call, headers
// and a large body together, or a large block with no blank line, is not
// copied whole onto the worker's heap: only the header block is held.
func TestCGIWriterHoldsOnlyTheHeaders(t *testing.T) {
	const size = 16 << 20
	out := append([]byte("Content-Type: text/plain\n\n"), bytes.Repeat([]byte("x"), size)...)
	w := &countingWriter{h: http.Header{}}
	c := &cgiWriter{w: w}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if n, err := c.Write(out); err != nil || n != len(out) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	runtime.ReadMemStats(&after)
	if w.code != 200 || w.n != size || w.h.Get("Content-Type") != "text/plain" {
		t.Fatalf("got %d, %d bytes, %v; want 200 and the whole body", w.code, w.n, w.h)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > size/4 {
		t.Errorf("writing a %d MiB response allocated %d MiB", size>>20, grew>>20)
	}

	c = &cgiWriter{w: &countingWriter{h: http.Header{}}}
	_, _ = c.Write(bytes.Repeat([]byte("a"), size))
	if c.bad == nil || !strings.Contains(c.bad.Error(), "no blank line") || len(c.head) > maxCGIHeaderBytes+2 {
		t.Fatalf("bad = %v with %d bytes held, want the header limit and at most %d held", c.bad, len(c.head), maxCGIHeaderBytes+2)
	}
}

// countingWriter is an http.ResponseWriter that keeps only its status,
// headers and the count of body bytes.
type countingWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *countingWriter) Header() http.Header { return w.h }
func (w *countingWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *countingWriter) Write(b []byte) (int, error) {
	w.WriteHeader(200)
	w.n += len(b)
	return len(b), nil
}

// serveTest runs one request through a prepared function of a test module.
type serveTest struct {
	t  *testing.T
	fn runtimeapi.Function
}

func prepareFunction(t *testing.T, r *Runtime, module string, env ...string) *serveTest {
	t.Helper()
	fn, err := r.PrepareFunction(context.Background(), testArtifact(t, module), runtimeapi.FunctionSpec{Env: env})
	if err != nil {
		t.Fatalf("PrepareFunction(%s): %v", module, err)
	}
	t.Cleanup(fn.Close)
	return &serveTest{t: t, fn: fn}
}

func (s *serveTest) serve(req *http.Request, body io.Reader, timeout time.Duration) (*httptest.ResponseRecorder, runtimeapi.FunctionResult, string) {
	s.t.Helper()
	rec := httptest.NewRecorder()
	var logs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	res := s.fn.Serve(ctx, rec, &runtimeapi.FunctionRequest{
		HTTP: req, Body: body, ScriptName: "/fn", PathInfo: strings.TrimPrefix(req.URL.Path, "/fn"),
		RemoteAddr: "192.0.2.7:5555", Timeout: timeout, Logs: &logs,
	})
	return rec, res, logs.String()
}

func TestCGIServeGreet(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	s := prepareFunction(t, r, "greet.wasm", "GREETING=hi")
	rec, res, _ := s.serve(httptest.NewRequest("GET", "http://example.test/fn?who=ana", nil), nil, 0)
	if res.Outcome != runtimeapi.OutcomeOK || rec.Code != 200 || rec.Body.String() != "hi, ana!\n" {
		t.Fatalf("got %+v %d %q", res, rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestCGIServeEchoVariablesAndBody(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	s := prepareFunction(t, r, "echo.wasm", "GREETING=from-env", "SERVER_NAME=not-this-one")
	body := strings.Repeat("0123456789", 5000)
	req := httptest.NewRequest("POST", "http://example.test:8080/fn/a/b?x=1&y=2", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Test", "one")
	req.Header.Add("X-Test", "two")
	req.Header.Set("X-Echo-Status", "201 Created")
	rec, res, _ := s.serve(req, req.Body, 0)
	if res.Outcome != runtimeapi.OutcomeOK || rec.Code != 201 {
		t.Fatalf("got %+v %d %q", res, rec.Code, rec.Body.String())
	}
	if rec.Body.String() != body {
		t.Errorf("body of %d bytes came back as %d bytes", len(body), rec.Body.Len())
	}
	want := map[string]string{
		"REQUEST_METHOD": "POST", "SCRIPT_NAME": "/fn", "PATH_INFO": "/a/b", "QUERY_STRING": "x=1&y=2",
		"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "50000", "SERVER_NAME": "example.test",
		"SERVER_PORT": "8080", "REMOTE_ADDR": "192.0.2.7", "GATEWAY_INTERFACE": "CGI/1.1",
		"HTTP_HOST": "example.test:8080", "HTTP_X_TEST": "one, two", "X_MATCHED_ROUTE": "/fn",
		"GREETING": "from-env",
	}
	for k, v := range want {
		if got := rec.Header().Get("X-Cgi-" + k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestCGIServeFreshInstancePerRequest(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	s := prepareFunction(t, r, "counter.wasm")
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				rec, res, _ := s.serve(httptest.NewRequest("GET", "/fn", nil), nil, 0)
				if res.Outcome != runtimeapi.OutcomeOK || rec.Body.String() != "1\n" {
					t.Errorf("got %+v %q, want 1: every request a fresh instance", res, rec.Body.String())
				}
			}
		}()
	}
	wg.Wait()
	if n := r.compiles.Load(); n != 1 {
		t.Errorf("%d compilations, want 1 for every request", n)
	}
}

func TestCGIServeFailures(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	tests := []struct {
		module   string
		timeout  time.Duration
		status   int
		outcome  string
		inLogs   string
		inBody   string
		bodyFrom io.Reader
	}{
		{module: "loop.wasm", timeout: 100 * time.Millisecond, status: 504, outcome: runtimeapi.OutcomeTimeout, inLogs: "stopped at its timeout of 100ms"},
		{module: "trap.wasm", status: 500, outcome: runtimeapi.OutcomeTrap, inLogs: "trapped: wasm error: unreachable"},
		{module: "fail.wasm", status: 500, outcome: runtimeapi.OutcomeTrap, inLogs: "exited with code 3"},
		{module: "badcgi.wasm", status: 502, outcome: runtimeapi.OutcomeMalformed, inLogs: `malformed CGI output: header line "this is not CGI output" is not "Name: value"`},
		{module: "hello.wasm", status: 502, outcome: runtimeapi.OutcomeMalformed, inLogs: "malformed CGI output"},
		{module: "echo.wasm", status: 413, outcome: runtimeapi.OutcomeTooLarge, inLogs: "larger than the function's limit of 10 bytes",
			bodyFrom: http.MaxBytesReader(nil, io.NopCloser(strings.NewReader(strings.Repeat("x", 100))), 10)},
		// A body that cannot be read (malformed chunks, a client that
		// stopped sending) is the request's failure, whatever the guest
		// made of the failed read.
		{module: "echo.wasm", status: 400, outcome: runtimeapi.OutcomeBadBody, inLogs: "reading the request body: unexpected EOF",
			bodyFrom: io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(io.ErrUnexpectedEOF))},
	}
	for _, tt := range tests {
		t.Run(tt.module, func(t *testing.T) {
			s := prepareFunction(t, r, tt.module)
			rec, res, logs := s.serve(httptest.NewRequest("POST", "/fn", nil), tt.bodyFrom, tt.timeout)
			if rec.Code != tt.status || res.Status != tt.status || res.Outcome != tt.outcome {
				t.Errorf("got %d, %+v; want %d %s", rec.Code, res, tt.status, tt.outcome)
			}
			if !strings.Contains(logs, tt.inLogs) {
				t.Errorf("logs %q do not say %q", logs, tt.inLogs)
			}
			if !strings.Contains(rec.Body.String(), tt.inLogs) {
				t.Errorf("body %q does not say %q", rec.Body.String(), tt.inLogs)
			}
		})
	}
	// The failures left nothing behind: a good function still answers.
	s := prepareFunction(t, r, "greet.wasm")
	if rec, res, _ := s.serve(httptest.NewRequest("GET", "/fn", nil), nil, 0); rec.Code != 200 {
		t.Errorf("greet after the failures: %d %+v", rec.Code, res)
	}
}

// flushRecorder records the order of writes and flushes.
type flushRecorder struct {
	*httptest.ResponseRecorder
	mu     sync.Mutex
	events []string
}

func (f *flushRecorder) Write(p []byte) (int, error) {
	f.mu.Lock()
	f.events = append(f.events, "write:"+string(p))
	f.mu.Unlock()
	return f.ResponseRecorder.Write(p)
}

func (f *flushRecorder) Flush() {
	f.mu.Lock()
	f.events = append(f.events, "flush")
	f.mu.Unlock()
	f.ResponseRecorder.Flush()
}

func TestCGIServeStreamsOutput(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	fn, err := r.PrepareFunction(context.Background(), testArtifact(t, "stream.wasm"), runtimeapi.FunctionSpec{})
	if err != nil {
		t.Fatal(err)
	}
	defer fn.Close()
	rec := &flushRecorder{ResponseRecorder: httptest.NewRecorder()}
	res := fn.Serve(context.Background(), rec, &runtimeapi.FunctionRequest{HTTP: httptest.NewRequest("GET", "/", nil), Timeout: safetyTimeout})
	if res.Outcome != runtimeapi.OutcomeOK {
		t.Fatalf("%+v", res)
	}
	// The first line is flushed when the guest pauses, before the second
	// is written; the second is left to the server, which ends the response.
	want := []string{"write:first\n", "flush", "write:second\n"}
	if strings.Join(rec.events, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q: the first line flushed before the second was written", rec.events, want)
	}
}

func TestCGIServeTimeoutAfterHeadersTruncates(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	s := prepareFunction(t, r, "stream.wasm")
	// stream.wasm sleeps 50 ms between its lines; 1 ms stops it in between.
	rec, res, logs := s.serve(httptest.NewRequest("GET", "/fn", nil), nil, time.Millisecond)
	if res.Outcome != runtimeapi.OutcomeTimeout || !res.Truncated || rec.Code != 200 {
		t.Fatalf("got %d %+v", rec.Code, res)
	}
	if !strings.Contains(logs, "response truncated") {
		t.Errorf("logs %q", logs)
	}
}

func TestCGIServeAfterCloseRefuses(t *testing.T) {
	t.Parallel()
	r, err := New(context.Background(), Config{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fn, err := r.PrepareFunction(context.Background(), testArtifact(t, "greet.wasm"), runtimeapi.FunctionSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	res := fn.Serve(context.Background(), rec, &runtimeapi.FunctionRequest{HTTP: httptest.NewRequest("GET", "/", nil)})
	if rec.Code != 503 || res.Outcome != runtimeapi.OutcomeError {
		t.Errorf("got %d %+v", rec.Code, res)
	}
	fn.Close()
}

// A function's config and secret files are read-only files of every
// request's sandbox, and of that function's only.
func TestCGIServeFilesReadOnly(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	files := map[string][]byte{"/config/app/GREETING": []byte("hello from a file"), "/secrets/db/password": []byte("s3cret")}
	fn, err := r.PrepareFunction(context.Background(), testArtifact(t, "catfn.wasm"), runtimeapi.FunctionSpec{Files: files})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fn.Close)
	s := &serveTest{t: t, fn: fn}
	call := func(s *serveTest, method, path string) (int, string) {
		t.Helper()
		rec, res, logs := s.serve(httptest.NewRequest(method, "http://example.test/fn"+path, nil), nil, 0)
		if res.Outcome != runtimeapi.OutcomeOK {
			t.Fatalf("%s %s: %+v, logs %q", method, path, res, logs)
		}
		return rec.Code, rec.Body.String()
	}
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/config/app/GREETING", 200, "hello from a file"},
		{"GET", "/secrets/db/password", 200, "s3cret"},
		{"GET", "/config/app/missing", 404, "/config/app/missing: cannot open\n"},
		{"PUT", "/config/app/GREETING", 403, "/config/app/GREETING: cannot write\n"},
		{"PUT", "/config/app/new", 403, "/config/app/new: cannot write\n"},
		{"PUT", "/secrets/db/password", 403, "/secrets/db/password: cannot write\n"},
		{"GET", "/config/app/GREETING", 200, "hello from a file"},
		{"GET", "/config/app/new", 404, "/config/app/new: cannot open\n"},
	} {
		if code, body := call(s, tc.method, tc.path); code != tc.code || body != tc.body {
			t.Errorf("%s %s = %d %q, want %d %q", tc.method, tc.path, code, body, tc.code, tc.body)
		}
	}
	// Concurrent requests each see the files.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if code, body := call(s, "GET", "/secrets/db/password"); code != 200 || body != "s3cret" {
				t.Errorf("concurrent GET = %d %q", code, body)
			}
		})
	}
	wg.Wait()

	plain := prepareFunction(t, r, "catfn.wasm")
	if code, body := call(plain, "GET", "/config/app/GREETING"); code != 404 {
		t.Errorf("a function without files reads another's: %d %q", code, body)
	}
}

// TestCGIEnvWorkloadVariables: the workload's variables come after the
// request's, those the request sets left out, whether there are few
// (looked up along the request's) or many (in a set).
func TestCGIEnvWorkloadVariables(t *testing.T) {
	t.Parallel()
	req := httptest.NewRequest("GET", "http://example.test/fn?q=1", nil)
	req.Header.Set("X-Test", "one")
	req.Header.Add("X-Test", "two")
	req.Header.Set("Proxy", "http://evil.test")
	for _, extra := range []int{0, 12} {
		workload := []string{"SERVER_NAME=not-this-one", "HTTP_X_TEST=nor-this", "GREETING=hi", "QUERY_STRINGS=kept"}
		for i := range extra {
			workload = append(workload, "EXTRA_"+string(rune('A'+i))+"=x")
		}
		env := cgiEnv(&runtimeapi.FunctionRequest{HTTP: req, ScriptName: "/fn", RemoteAddr: "192.0.2.7:1"}, workload)
		count := map[string]int{}
		vars := map[string]string{}
		for i, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			count[k]++
			vars[k] = v
			if k == "GREETING" && i < len(env)-len(workload)+2 {
				t.Errorf("%d extra: GREETING at %d of %d, before the request's variables", extra, i, len(env))
			}
		}
		for k, want := range map[string]string{"SERVER_NAME": "example.test", "HTTP_X_TEST": "one, two", "GREETING": "hi", "QUERY_STRING": "q=1", "QUERY_STRINGS": "kept"} {
			if vars[k] != want || count[k] != 1 {
				t.Errorf("%d extra: %s = %q (%d times), want %q once", extra, k, vars[k], count[k], want)
			}
		}
		if _, ok := vars["HTTP_PROXY"]; ok {
			t.Errorf("%d extra: HTTP_PROXY set from the request's Proxy header", extra)
		}
		if extra > 0 && vars["EXTRA_L"] != "x" {
			t.Errorf("%d extra: EXTRA_L = %q", extra, vars["EXTRA_L"])
		}
	}
}
