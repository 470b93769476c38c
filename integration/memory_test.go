package integration

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestFunctionRequestsStayWithinTheNodesMemory: a Wasm function's requests
// each hold its memory limit from the node's allocatable memory while
// they run (here 2 MiB, two requests of a 1 MiB function), whatever the
// function's concurrency: one more request is answered 503 with
// Retry-After rather than run (the reason in the member's log), and the
// function serves again as soon as the requests in flight end.
func TestFunctionRequestsStayWithinTheNodesMemory(t *testing.T) {
	logs := &syncBuffer{}
	a := start(t, options{memory: 1 << 30, reservedMemory: 1<<30 - 2<<20, functionMemoryWait: 10 * time.Millisecond, logs: logs})
	a.deployFunction(t, "echo", "echo.wasm", "/echo", func(s *v1.WorkloadSpec) { s.MemoryBytes = 1 << 20 })

	// Two requests whose bodies are still coming: their guests run,
	// reading stdin.
	type answer struct {
		status int
		body   string
		err    error
	}
	answers := make(chan answer, 2)
	var bodies []*io.PipeWriter
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 2 {
		pr, pw := io.Pipe()
		bodies = append(bodies, pw)
		req, err := http.NewRequestWithContext(ctx, "POST", "http://"+a.http+"/echo", pr)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			answers <- answer{resp.StatusCode, string(b), err}
		}()
	}
	defer func() {
		for _, pw := range bodies {
			_ = pw.Close()
		}
	}()
	a.waitFor(t, "two requests holding the node's memory", func() (bool, string) {
		u := a.worker.MemoryUsage()
		return u.Borrowed == 2<<20, ""
	})

	resp, err := http.Post("http://"+a.http+"/echo", "text/plain", strings.NewReader("third"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	id := resp.Header.Get("X-Request-Id")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || id == "" || !strings.Contains(string(b), id) || strings.Contains(string(b), "memory") {
		t.Fatalf("a third request while two hold the node's memory: %s %q (Retry-After %q), want 503 with Retry-After and the request id, without the reason", resp.Status, b, resp.Header.Get("Retry-After"))
	}
	// The reason is the operator's, in the member's log under the id.
	if line := logLineWith(logs.String(), id, "the node's memory is in use"); line == "" {
		t.Errorf("no line of the member's log gives request %s's reason", id)
	}

	for i, pw := range bodies {
		if _, err := pw.Write([]byte("held")); err != nil {
			t.Fatalf("body %d: %v", i, err)
		}
		_ = pw.Close()
	}
	for range 2 {
		if got := <-answers; got.err != nil || got.status != 200 || got.body != "held" {
			t.Errorf("a held request: %d %q %v, want 200 held", got.status, got.body, got.err)
		}
	}
	resp, err = http.Post("http://"+a.http+"/echo", "text/plain", strings.NewReader("again"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "again" {
		t.Fatalf("once the memory came back: %s %q, want 200 again", resp.Status, b)
	}
	if u := a.worker.MemoryUsage(); u.Borrowed != 0 || u.Waiting != 0 {
		t.Errorf("after every request: %+v, want nothing held", u)
	}
}
