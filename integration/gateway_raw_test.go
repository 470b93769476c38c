package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// These tests speak to a real gateway with bytes written by hand and read
// the bytes it answers, as a hostile or broken client would, through a
// real worker running real modules: "up" with the worker's function
// server in the gateway's process, "http" with it reached over HTTP (mutual
// TLS) as across processes. Each path has its own HTTP stack between the
// function and the client, so each is tried.

// rawResponse is one response as it came over the wire.
type rawResponse struct {
	head   string // the status line and the header lines, as sent
	status int
	header http.Header // parsed by net/http's client, as a client sees it
	body   string      // decoded by its framing
	closed bool        // the gateway closed the connection after it
}

// headerLines are the names of the header lines in the raw head.
func (r rawResponse) headerLines() map[string][]string {
	out := map[string][]string{}
	for _, line := range strings.Split(r.head, "\r\n")[1:] {
		if name, value, ok := strings.Cut(line, ":"); ok {
			out[http.CanonicalHeaderKey(name)] = append(out[http.CanonicalHeaderKey(name)], strings.TrimSpace(value))
		}
	}
	return out
}

// exchange writes request to the gateway on a new connection and reads
// the responses that come back, then whether the gateway closed the
// connection. It reads at most n responses.
func exchange(t *testing.T, addr, request string, n int) []rawResponse {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A safety net against a hang, not a performance assertion.
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(conn, &raw))
	var out []rawResponse
	for len(out) < n {
		start := raw.Len() - br.Buffered()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if len(out) == 0 {
				t.Fatalf("reading a response: %v (read %q)", err, raw.String())
			}
			break
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatalf("reading the body of %s: %v (read %q)", resp.Status, err, raw.String())
		}
		all := raw.Bytes()[start:]
		head, _, _ := bytes.Cut(all, []byte("\r\n\r\n"))
		out = append(out, rawResponse{head: string(head), status: resp.StatusCode, header: resp.Header, body: string(b)})
	}
	// Closed: the next read ends at once rather than wait for the deadline.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == io.EOF {
		out[len(out)-1].closed = true
	}
	return out
}

// deployAnswering deploys testdata/<module> as a function at route and
// waits until its replica answers (any status but the gateway's 404 and
// 503).
func (a *allInOne) deployAnswering(t *testing.T, name, module, route string, edit ...func(*v1.WorkloadSpec)) {
	t.Helper()
	spec := &v1.WorkloadSpec{Kind: "wasm", Replicas: 1, Http: &v1.HttpTrigger{Route: route}}
	for _, e := range edit {
		e(spec)
	}
	a.deploy(t, name, module, spec)
	a.waitFor(t, name+" answering at "+route, func() (bool, string) {
		resp, err := http.Post("http://"+a.http+route, "text/plain", strings.NewReader("Content-Type: text/plain\n\nready"))
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode != 404 && resp.StatusCode != 503, resp.Status
	})
}

// post is a raw POST of body to path with a Content-Length, closing the
// connection after the response.
func post(path, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: fn.test\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", path, len(body), body)
}

func eachPath(t *testing.T, test func(t *testing.T, a *allInOne, logs *syncBuffer)) {
	for _, tt := range []struct {
		name string
		opts options
	}{{"up", options{}}, {"http", options{functionsOverHTTP: true}}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logs := &syncBuffer{}
			tt.opts.logs = logs
			test(t, start(t, tt.opts), logs)
		})
	}
}

// A function's CGI output may name any header; those that describe one
// connection (RFC 9110 7.6.1) are not the function's to send, and must not
// reach the client whichever way the gateway reached the worker.
func TestGatewayDropsHopByHopHeadersOfAFunction(t *testing.T) {
	eachPath(t, func(t *testing.T, a *allInOne, _ *syncBuffer) {
		a.deployAnswering(t, "raw", "rawcgi.wasm", "/raw")
		cgi := "Content-Type: text/plain\n" +
			"Connection: X-Private\n" +
			"X-Private: named in Connection\n" +
			"Keep-Alive: timeout=600\n" +
			"Transfer-Encoding: gzip\n" +
			"Upgrade: h2c\n" +
			"TE: trailers\n" +
			"Trailer: X-Checksum\n" +
			"Proxy-Authenticate: Basic realm=fn\n" +
			"Proxy-Connection: keep-alive\n" +
			"X-Kept: yes\n" +
			"\nhello"
		// The client asks to keep the connection: whatever Connection
		// header comes back is the gateway's.
		req := fmt.Sprintf("POST /raw HTTP/1.1\r\nHost: fn.test\r\nContent-Length: %d\r\n\r\n%s", len(cgi), cgi)
		resp := exchange(t, a.http, req, 1)[0]
		if resp.status != 200 || resp.body != "hello" || resp.header.Get("X-Kept") != "yes" {
			t.Fatalf("got %d %q, X-Kept %q; want 200 hello yes:\n%s", resp.status, resp.body, resp.header.Get("X-Kept"), resp.head)
		}
		lines := resp.headerLines()
		for _, name := range []string{"Keep-Alive", "Upgrade", "Te", "Trailer", "Proxy-Authenticate", "Proxy-Connection", "X-Private"} {
			if v, ok := lines[name]; ok {
				t.Errorf("the function's %s: %q reached the client:\n%s", name, v, resp.head)
			}
		}
		for _, name := range []string{"Connection", "Transfer-Encoding"} {
			for _, v := range lines[name] {
				if v != "close" && v != "keep-alive" && v != "chunked" {
					t.Errorf("the function's %s: %q reached the client:\n%s", name, v, resp.head)
				}
			}
		}
		if resp.closed {
			t.Errorf("the gateway closed a kept-alive connection after the function's Connection header:\n%s", resp.head)
		}
	})
}

// The length of a function's response is what it writes: a Content-Length
// it declares that its body contradicts does not cut the body or hang the
// client.
func TestGatewayFramesAFunctionsBodyByWhatItWrote(t *testing.T) {
	eachPath(t, func(t *testing.T, a *allInOne, _ *syncBuffer) {
		a.deployAnswering(t, "raw", "rawcgi.wasm", "/raw")
		for _, tt := range []struct{ name, cgi, body string }{
			{"shorter than the body", "Content-Type: text/plain\nContent-Length: 2\n\nhello world", "hello world"},
			{"longer than the body", "Content-Type: text/plain\nContent-Length: 50\n\nshort", "short"},
			{"not a number", "Content-Type: text/plain\nContent-Length: many\n\nbytes", "bytes"},
			{"two of them", "Content-Type: text/plain\nContent-Length: 5\nContent-Length: 6\n\nfive!", "five!"},
		} {
			resp := exchange(t, a.http, post("/raw", tt.cgi), 1)[0]
			if resp.status != 200 || resp.body != tt.body {
				t.Errorf("Content-Length %s: got %d %q, want 200 %q:\n%s", tt.name, resp.status, resp.body, tt.body, resp.head)
			}
			if cl := resp.headerLines()["Content-Length"]; len(cl) > 0 && cl[0] != fmt.Sprint(len(tt.body)) {
				t.Errorf("Content-Length %s: the client was told %v for %d bytes", tt.name, cl, len(tt.body))
			}
		}
		// A function cannot answer with an informational or switching
		// status in place of its response.
		resp := exchange(t, a.http, post("/raw", "Status: 101 Switching Protocols\nUpgrade: h2c\n\n"), 1)[0]
		if resp.status != http.StatusBadGateway {
			t.Errorf("Status 101 from a function: got %d, want 502:\n%s", resp.status, resp.head)
		}
	})
}

// A request body the client garbled is refused, rather than handed to the
// function as if it were empty or complete.
func TestGatewayRefusesAMalformedChunkedBody(t *testing.T) {
	eachPath(t, func(t *testing.T, a *allInOne, _ *syncBuffer) {
		a.deployAnswering(t, "echo", "echo.wasm", "/echo")
		for _, tt := range []struct{ name, chunks string }{
			{"a size that is not hex", "zz\r\nhello\r\n0\r\n\r\n"},
			{"data longer than its size", "2\r\nhello\r\n0\r\n\r\n"},
			{"cut before the last chunk", "5\r\nhello\r\n"},
		} {
			req := "POST /echo HTTP/1.1\r\nHost: fn.test\r\nTransfer-Encoding: chunked\r\nX-Echo-Status: 201\r\n\r\n" + tt.chunks
			if !strings.HasSuffix(tt.chunks, "0\r\n\r\n") {
				// The client stops sending: its half of the connection
				// ends there.
				resp := exchangeHalfClosed(t, a.http, req)
				if resp.status != http.StatusBadRequest {
					t.Errorf("%s: got %d %q, want 400:\n%s", tt.name, resp.status, resp.body, resp.head)
				}
				continue
			}
			resp := exchange(t, a.http, req, 1)[0]
			if resp.status != http.StatusBadRequest {
				t.Errorf("%s: got %d %q, want 400:\n%s", tt.name, resp.status, resp.body, resp.head)
			}
		}
		// A well-formed chunked body still goes through.
		req := "POST /echo HTTP/1.1\r\nHost: fn.test\r\nTransfer-Encoding: chunked\r\nX-Echo-Status: 201\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
		if resp := exchange(t, a.http, req, 1)[0]; resp.status != 201 || resp.body != "hello world" {
			t.Errorf("a good chunked body: got %d %q, want 201 hello world:\n%s", resp.status, resp.body, resp.head)
		}
	})
}

// exchangeHalfClosed writes request, closes the connection's write side
// and reads one response.
func exchangeHalfClosed(t *testing.T, addr, request string) rawResponse {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading the response: %v (read %q)", err, b)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		t.Fatalf("reading the response: %v (read %q)", err, b)
	}
	body, _ := io.ReadAll(resp.Body)
	head, _, _ := strings.Cut(string(b), "\r\n\r\n")
	return rawResponse{head: head, status: resp.StatusCode, header: resp.Header, body: string(body), closed: true}
}

// A request that declares its length twice, by Content-Length and by
// Transfer-Encoding, is how requests are smuggled past a proxy that reads
// the other one (RFC 9112 6.1, 11.2): it is refused and the connection
// closed, so that nothing the client sent after it is read as a request.
func TestGatewayRefusesContentLengthWithTransferEncoding(t *testing.T) {
	eachPath(t, func(t *testing.T, a *allInOne, _ *syncBuffer) {
		a.deployAnswering(t, "echo", "echo.wasm", "/echo")
		smuggled := "GET /echo HTTP/1.1\r\nHost: fn.test\r\nX-Echo-Status: 299\r\n\r\n"
		for _, tt := range []struct{ name, head, body string }{
			{"chunked body", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n" + smuggled},
			{"Transfer-Encoding first", "Transfer-Encoding: chunked\r\nContent-Length: 33\r\n", "0\r\n\r\n" + smuggled},
			{"header names in lower case", "content-length: 5\r\ntransfer-encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n" + smuggled},
		} {
			req := "POST /echo HTTP/1.1\r\nHost: fn.test\r\n" + tt.head + "\r\n" + tt.body
			resps := exchange(t, a.http, req, 2)
			if resps[0].status != http.StatusBadRequest {
				t.Errorf("%s: got %d %q, want 400:\n%s", tt.name, resps[0].status, resps[0].body, resps[0].head)
			}
			if len(resps) > 1 || !resps[0].closed {
				t.Errorf("%s: the connection stayed open after the refusal (%d responses)", tt.name, len(resps))
			}
		}
		// Each alone is fine, and a kept-alive connection serves the next.
		req := "POST /echo HTTP/1.1\r\nHost: fn.test\r\nContent-Length: 5\r\n\r\nhello" +
			"POST /echo HTTP/1.1\r\nHost: fn.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nworld\r\n0\r\n\r\n"
		resps := exchange(t, a.http, req, 2)
		if len(resps) != 2 || resps[0].body != "hello" || resps[1].body != "world" {
			t.Errorf("Content-Length, then chunked, on one connection: %+v", resps)
		}
	})
}

// What went wrong inside a function is for its owner: the client gets the
// status and a request id, the member's log and the workload's events get
// the detail under that id.
func TestGatewayKeepsAFunctionsFailureFromTheClient(t *testing.T) {
	eachPath(t, func(t *testing.T, a *allInOne, logs *syncBuffer) {
		a.deployAnswering(t, "trap", "trap.wasm", "/trap", func(s *v1.WorkloadSpec) { s.Http.MaxBodyBytes = 1000 })
		a.deployAnswering(t, "raw", "rawcgi.wasm", "/raw")
		a.deployAnswering(t, "loop", "loop.wasm", "/loop", func(s *v1.WorkloadSpec) { s.Http.TimeoutMs = 300 })
		for _, tt := range []struct {
			name, request, workload string
			status                  int
			detail                  string // in the log and the event, never in the response
		}{
			{"a trap", post("/trap", ""), "trap", 500, "wasm error: unreachable"},
			{"output that is not CGI", post("/raw", "this is not CGI output\n"), "raw", 502, `header line "this is not CGI output" is not "Name: value"`},
			{"a timeout", post("/loop", ""), "loop", 504, "stopped at its timeout of 300ms"},
		} {
			resp := exchange(t, a.http, tt.request, 1)[0]
			id := resp.header.Get("X-Request-Id")
			if resp.status != tt.status || id == "" || !strings.Contains(resp.body, id) {
				t.Errorf("%s: got %d %q, X-Request-Id %q; want %d with the request id in the body", tt.name, resp.status, resp.body, id, tt.status)
				continue
			}
			for _, leak := range []string{tt.detail, "wasm", "trap", "CGI", "replica", "instance", "node", a.worker.FunctionAddr(), tt.workload} {
				if strings.Contains(resp.head+resp.body, leak) {
					t.Errorf("%s: the response gives away %q:\n%s\r\n\r\n%s", tt.name, leak, resp.head, resp.body)
				}
			}
			a.waitFor(t, tt.name+" in the member's log", func() (bool, string) {
				return logLineWith(logs.String(), id, tt.detail, tt.workload) != "", logs.String()
			})
			// Deploying it failed a request already: the event may be that
			// one's (they are rate-limited), with the same detail.
			a.waitFor(t, tt.name+" as an event of workload "+tt.workload, func() (bool, string) {
				evs := a.events(t, tt.workload)
				for _, ev := range evs {
					if ev.GetReason() == "FunctionFailed" && strings.Contains(ev.GetMessage(), tt.detail) {
						return true, ""
					}
				}
				return false, fmt.Sprint(evs)
			})
		}
		// The client's limit and the gateway's own answers keep their
		// status, with the same plain body.
		over := exchange(t, a.http, post("/trap", strings.Repeat("x", 1001)), 1)[0]
		if over.status != http.StatusRequestEntityTooLarge || !strings.Contains(over.body, over.header.Get("X-Request-Id")) || strings.Contains(over.body, "1000") {
			t.Errorf("a body over the limit: got %d %q", over.status, over.body)
		}
		none := exchange(t, a.http, "GET /nowhere/<script> HTTP/1.1\r\nHost: fn.test\r\nConnection: close\r\n\r\n", 1)[0]
		if none.status != http.StatusNotFound || strings.Contains(none.body, "<script>") || none.header.Get("X-Request-Id") == "" {
			t.Errorf("no route: got %d %q", none.status, none.body)
		}
	})
}

// A function that fails every request cannot fill etcd with events: they
// are recorded at a bounded rate, each counting the failures since the
// previous one, while the log keeps every failure.
func TestGatewayRecordsAFailingFunctionsEventsAtABoundedRate(t *testing.T) {
	eachPath(t, func(t *testing.T, a *allInOne, logs *syncBuffer) {
		began := time.Now() // deploying it fails requests already
		a.deployAnswering(t, "trap", "trap.wasm", "/trap")
		const failures = 50
		ids := map[string]bool{}
		for range failures {
			resp := exchange(t, a.http, post("/trap", ""), 1)[0]
			if resp.status != 500 {
				t.Fatalf("got %d, want 500", resp.status)
			}
			ids[resp.header.Get("X-Request-Id")] = true
		}
		if len(ids) != failures {
			t.Errorf("%d distinct request ids for %d requests", len(ids), failures)
		}
		a.waitFor(t, "every failure in the member's log", func() (bool, string) {
			n := 0
			for id := range ids {
				if logLineWith(logs.String(), id, "wasm error: unreachable") != "" {
					n++
				}
			}
			return n == failures, fmt.Sprintf("%d of %d", n, failures)
		})
		var evs []*v1.Event
		a.waitFor(t, "an event", func() (bool, string) {
			evs = nil
			for _, ev := range a.events(t, "trap") {
				if ev.GetReason() == "FunctionFailed" {
					evs = append(evs, ev)
				}
			}
			return len(evs) > 0, ""
		})
		// One event at once, then at most one per interval (10 s),
		// however slowly the machine ran the failures.
		if most := 1 + int(time.Since(began)/(10*time.Second)); len(evs) > most {
			t.Errorf("%d events for %d failures in %s: not rate-limited (at most %d)", len(evs), failures, time.Since(began).Round(time.Second), most)
		}
	})
}

// logLineWith is the first line of logs holding every one of parts.
func logLineWith(logs string, parts ...string) string {
	for _, line := range strings.Split(logs, "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) && !strings.Contains(line, quoteLog(p)) {
				all = false
				break
			}
		}
		if all {
			return line
		}
	}
	return ""
}

// quoteLog is how slog's text handler writes s inside a quoted value.
func quoteLog(s string) string {
	q := fmt.Sprintf("%q", s)
	return q[1 : len(q)-1]
}

func (a *allInOne) events(t *testing.T, workload string) []*v1.Event {
	t.Helper()
	resp, err := a.control.ListEvents(context.Background(), &v1.ListEventsRequest{Object: "workload/" + workload})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetEvents()
}

// syncBuffer is a log the tests read while the member writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
