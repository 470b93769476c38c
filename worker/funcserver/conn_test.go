package funcserver

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// testServer is a ConnServer on loopback.
type testServer struct {
	URL  string
	Addr string
	srv  *ConnServer
	done chan error // Serve's return
}

func startConnServer(t *testing.T, h http.Handler) *testServer {
	t.Helper()
	return startConnServerTLS(t, h, nil)
}

func startConnServerTLS(t *testing.T, h http.Handler, cfg *tls.Config) *testServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Addr: lis.Addr().String(), srv: &ConnServer{Handler: h, TLS: cfg, ReadHeaderTimeout: safetyTimeout}, done: make(chan error, 1)}
	ts.URL = "http://" + ts.Addr
	go func() { ts.done <- ts.srv.Serve(lis) }()
	t.Cleanup(func() {
		_ = ts.srv.Close()
		if err := <-ts.done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ts
}

// rawConn is a client connection to a test server, read and written by
// hand to see what goes on the wire.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, ts *testServer) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", ts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(safetyTimeout))
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// answer reads one answer and its whole body.
func (r *rawConn) answer(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		r.t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp, string(b)
}

// closed reports whether the server closed the connection (nothing more
// to read).
func (r *rawConn) closed() bool {
	_, err := r.br.ReadByte()
	return err == io.EOF
}

func TestConnServerKeepsTheConnectionAndSendsTheLength(t *testing.T) {
	ts := startConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		fmt.Fprintf(w, "%s %s %q %s", req.Method, req.URL.RequestURI(), body, req.Header.Get("X-A"))
	}))
	rc := dialRaw(t, ts)
	for i, want := range []string{`GET /a?b=c "" 1`, `POST /p "hello" 2`, `POST /c "chunked" 3`} {
		switch i {
		case 0:
			rc.send("GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n")
		case 1:
			rc.send("POST /p HTTP/1.1\r\nHost: x\r\nX-A: 2\r\nContent-Length: 5\r\n\r\nhello")
		case 2:
			rc.send("POST /c HTTP/1.1\r\nHost: x\r\nX-A: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nchu\r\n4\r\nnked\r\n0\r\n\r\n")
		}
		resp, body := rc.answer("GET")
		if resp.StatusCode != 200 || body != want || resp.ContentLength != int64(len(want)) || resp.Close {
			t.Fatalf("request %d: %d %q (length %d, close %v), want 200 %q with its length on a kept connection", i, resp.StatusCode, body, resp.ContentLength, resp.Close, want)
		}
		if resp.Header.Get("Date") == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("request %d: headers %v, want a Date and a sniffed Content-Type", i, resp.Header)
		}
	}
}

func TestConnServerStreamsWhatTheHandlerFlushes(t *testing.T) {
	release := make(chan struct{})
	ts := startConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-release
		_, _ = io.WriteString(w, strings.Repeat("x", 10000))
	}))
	rc := dialRaw(t, ts)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ContentLength != -1 || len(resp.TransferEncoding) == 0 {
		t.Fatalf("a flushed answer: length %d, encoding %v, want chunked", resp.ContentLength, resp.TransferEncoding)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("before the handler ends: %q, %v; want what it flushed", first, err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(rest) != 10000 {
		t.Fatalf("the rest: %d bytes, %v", len(rest), err)
	}
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.answer("GET"); resp.StatusCode != 200 || len(body) != 10005 {
		t.Fatalf("the next request on the connection: %d, %d bytes", resp.StatusCode, len(body))
	}
}

func TestConnServerBodiesLeftUnread(t *testing.T) {
	ts := startConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.WriteString(w, "ignored your body")
	}))
	rc := dialRaw(t, ts)
	// A small one is read and dropped: the connection stays.
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	if resp, _ := rc.answer("POST"); resp.Close {
		t.Fatal("a small body left unread closed the connection")
	}
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := rc.answer("GET"); resp.StatusCode != 200 {
		t.Fatalf("next request: %d", resp.StatusCode)
	}
	// A large one is not read: the answer says the connection closes.
	big := maxPostHandlerRead + 10
	go func() {
		_, _ = io.WriteString(rc.c, fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", big))
		_, _ = rc.c.Write(make([]byte, big))
	}()
	resp, _ := rc.answer("POST")
	if !resp.Close {
		t.Fatal("a large body left unread: the answer does not close the connection")
	}
}

func TestConnServerExpectContinue(t *testing.T) {
	ts := startConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		_, _ = w.Write(b)
	}))
	rc := dialRaw(t, ts)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	line, err := rc.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("before the body: %q, %v; want 100 Continue", line, err)
	}
	if blank, _ := rc.br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("100 Continue followed by %q", blank)
	}
	rc.send("body")
	if resp, body := rc.answer("POST"); resp.StatusCode != 200 || body != "body" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

func TestConnServerRefusesMalformedRequests(t *testing.T) {
	ts := startConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {}))
	for _, tt := range []struct {
		name, req string
		code      int
	}{
		{"garbage", "NOT HTTP\r\n\r\n", 400},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"head too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", maxHeadBytes) + "\r\n\r\n", 431},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rc := dialRaw(t, ts)
			go func() { _, _ = io.WriteString(rc.c, tt.req) }()
			resp, _ := rc.answer("GET")
			if resp.StatusCode != tt.code || !resp.Close || !rc.closed() {
				t.Fatalf("%d (close %v), want %d and the connection closed", resp.StatusCode, resp.Close, tt.code)
			}
		})
	}
}

func TestConnServerHeadAndBodilessStatuses(t *testing.T) {
	ts := startConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/204" {
			w.WriteHeader(http.StatusNoContent)
		}
		_, _ = io.WriteString(w, "body")
	}))
	rc := dialRaw(t, ts)
	rc.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.answer("HEAD"); resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
	rc.send("GET /204 HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.answer("GET"); resp.StatusCode != 204 || body != "" || resp.Header.Get("Content-Length") != "" {
		t.Fatalf("204: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.answer("GET"); resp.StatusCode != 200 || body != "body" {
		t.Fatalf("after them: %d %q", resp.StatusCode, body)
	}
}

func TestConnServerHTTP10(t *testing.T) {
	ts := startConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.WriteString(w, "ten")
	}))
	rc := dialRaw(t, ts)
	rc.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if resp, body := rc.answer("GET"); body != "ten" || resp.Close {
		t.Fatalf("HTTP/1.0 keep-alive: %q, close %v", body, resp.Close)
	}
	rc.send("GET / HTTP/1.0\r\n\r\n")
	if _, body := rc.answer("GET"); body != "ten" || !rc.closed() {
		t.Fatalf("HTTP/1.0: %q, want the connection closed after", body)
	}
}

// The gateway closes the connection when its client goes away or its
// timeout passes: the call is canceled, whether the server watches its
// connections through epoll or by reading them.
func TestConnServerCancelsACallWhenTheGatewayCloses(t *testing.T) {
	for _, reading := range []bool{false, true} {
		t.Run(fmt.Sprintf("reading=%v", reading), func(t *testing.T) {
			started := make(chan struct{})
			cause := make(chan error, 1)
			ts := startConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				// Watched by reading, the watch starts once the body is
				// read: before, the handler's reads see the close.
				_, _ = io.ReadAll(req.Body)
				close(started)
				select {
				case <-req.Context().Done():
					cause <- context.Cause(req.Context())
				case <-time.After(safetyTimeout):
					cause <- errors.New("never canceled")
				}
			}))
			if reading {
				ts.srv.watchOnce.Do(func() {}) // no epoll watcher
			}
			rc := dialRaw(t, ts)
			rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
			<-started
			_ = rc.c.Close()
			if err := <-cause; !errors.Is(err, errGatewayGone) {
				t.Fatalf("the call ended with %v, want %v", err, errGatewayGone)
			}
		})
	}
}

// Watched calls whose gateway stays answer normally, and the connection
// carries the next requests (each watch ends with its call).
func TestConnServerWatchEndsWithTheCall(t *testing.T) {
	for _, reading := range []bool{false, true} {
		t.Run(fmt.Sprintf("reading=%v", reading), func(t *testing.T) {
			ts := startConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				b, _ := io.ReadAll(req.Body)
				if req.Context().Err() != nil {
					t.Error("a call was canceled while its gateway stayed")
				}
				_, _ = io.WriteString(w, req.URL.Path+string(b))
			}))
			if reading {
				ts.srv.watchOnce.Do(func() {})
			}
			rc := dialRaw(t, ts)
			for i := range 5 {
				if i%2 == 0 {
					rc.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
				} else {
					rc.send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nb")
				}
				want := "/a"
				if i%2 == 1 {
					want = "/ab"
				}
				if resp, body := rc.answer("GET"); resp.StatusCode != 200 || body != want || resp.Close {
					t.Fatalf("request %d: %d %q close %v", i, resp.StatusCode, body, resp.Close)
				}
			}
		})
	}
}

func TestConnServerAbortHandlerCutsTheAnswer(t *testing.T) {
	ts := startConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	rc := dialRaw(t, ts)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if string(b) != "part" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read %q, %v; want the answer cut short", b, err)
	}
}

func TestConnServerShutdown(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	ts := startConnServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/hold" {
			close(started)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	}))
	idle := dialRaw(t, ts)
	idle.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	idle.answer("GET")
	busy := dialRaw(t, ts)
	busy.send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	if !idle.closed() {
		t.Fatal("an idle connection stays open after Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
	default:
	}
	close(release)
	if resp, body := busy.answer("GET"); body != "done" || resp.StatusCode != 200 {
		t.Fatalf("the request in flight: %d %q", resp.StatusCode, body)
	}
	if !busy.closed() {
		t.Fatal("the busy connection stays open after its answer")
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", ts.Addr); err == nil {
		t.Fatal("the listener still accepts")
	}
}

func TestConnServerOverTLS(t *testing.T) {
	cert := selfSigned(t)
	ts := startConnServerTLS(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.TLS == nil {
			http.Error(w, "no TLS state", 500)
			return
		}
		_, _ = io.WriteString(w, "secure "+req.RemoteAddr)
	}), &tls.Config{Certificates: []tls.Certificate{cert}})
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	defer client.CloseIdleConnections()
	for range 3 {
		resp, err := client.Get("https://" + ts.Addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "secure 127.0.0.1:") {
			t.Fatalf("%d %q", resp.StatusCode, b)
		}
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
