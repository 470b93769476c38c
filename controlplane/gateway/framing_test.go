package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// strictServer serves, through Strict and StrictListener as the public
// port does, a handler that answers each request with its method, path,
// body and whether it saw the framing header.
func strictServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Strict(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, req.Method+" "+req.URL.Path+" "+string(b)+" "+req.Header.Get(framingHeader))
	}))}
	go func() { _ = srv.Serve(StrictListener(lis)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return lis.Addr().String()
}

type answer struct {
	status int
	body   string
}

// converse writes request in pieces of chunk bytes (0: at once) and
// reads answers: n of them, or all until the server closes the connection
// when untilClosed (closed then says it did).
func converse(t *testing.T, addr, request string, chunk, n int, untilClosed bool) (answers []answer, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // a hang's safety net
	go func() {
		if chunk == 0 {
			chunk = len(request)
		}
		for rest := request; rest != ""; {
			k := min(chunk, len(rest))
			if _, err := io.WriteString(conn, rest[:k]); err != nil {
				return
			}
			rest = rest[k:]
		}
	}()
	br := bufio.NewReader(conn)
	for untilClosed || len(answers) < n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no answer nor close within the safety net: %v", err)
			}
			return answers, true
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		answers = append(answers, answer{resp.StatusCode, string(b)})
	}
	return answers, false
}

func TestStrictFraming(t *testing.T) {
	addr := strictServer(t)
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	inner := "POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
	tests := []struct {
		name    string
		request string
		want    []answer
		closed  bool
	}{
		{
			name: "requests with lengths on one connection",
			request: "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" +
				"GET /b HTTP/1.1\r\nHost: a\r\n\r\n" +
				"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n" +
				"POST /d HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nde",
			want: []answer{{200, "POST /a abc "}, {200, "GET /b  "}, {200, "POST /c  "}, {200, "POST /d de "}},
		},
		{
			// A body that looks like a request that gives both lengths is
			// a body: the next head is after it.
			name: "a head inside a body",
			request: fmt.Sprintf("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", len(inner), inner) +
				"GET /b HTTP/1.1\r\nHost: a\r\n\r\n",
			want: []answer{{200, "POST /a " + inner + " "}, {200, "GET /b  "}},
		},
		{
			name:    "both lengths",
			request: "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + smuggled,
			want:    []answer{{400, ""}},
			closed:  true,
		},
		{
			name:    "both lengths, folded and in other cases",
			request: "POST /a HTTP/1.1\r\nHost: a\r\ntransfer-ENCODING: chunked\r\nX-Pad: a\r\n b\r\ncontent-length:\r\n 5\r\n\r\n0\r\n\r\n" + smuggled,
			want:    []answer{{400, ""}},
			closed:  true,
		},
		{
			name:    "Transfer-Encoding in HTTP/1.0",
			request: "POST /a HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n" + smuggled,
			want:    []answer{{400, ""}},
			closed:  true,
		},
		{
			// A chunked request is the last of its connection: what
			// follows its chunks is never read as a request.
			name:    "chunked",
			request: "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + smuggled,
			want:    []answer{{200, "POST /a abc "}},
			closed:  true,
		},
		{
			name:    "a client's own framing header",
			request: "GET /a HTTP/1.1\r\nHost: a\r\nX-Wasmorch-Framing: forged\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
			want:    []answer{{200, "GET /a  "}, {200, "GET /b  "}},
		},
		{
			name:    "bare LF lines",
			request: "POST /a HTTP/1.1\nHost: a\nContent-Length: 2\n\nabGET /b HTTP/1.1\nHost: a\n\n",
			want:    []answer{{200, "POST /a ab "}, {200, "GET /b  "}},
		},
	}
	for _, tt := range tests {
		for _, chunk := range []int{0, 1, 7} {
			// A connection kept open shows by answering the requests
			// after the first; one closed, by ending.
			got, closed := converse(t, addr, tt.request, chunk, len(tt.want), tt.closed)
			if len(got) != len(tt.want) || closed != tt.closed {
				t.Errorf("%s, written %d bytes at a time: got %v (closed %v), want %v (closed %v)", tt.name, chunk, got, closed, tt.want, tt.closed)
				continue
			}
			for i, w := range tt.want {
				if got[i].status != w.status || w.status == 200 && got[i].body != w.body {
					t.Errorf("%s, written %d bytes at a time: answer %d is %d %q, want %d %q", tt.name, chunk, i, got[i].status, got[i].body, w.status, w.body)
				}
			}
		}
	}
}

// A head that net/http refuses ends the connection; the listener's
// watching stops without harm.
func TestStrictFramingLeavesMalformedHeadsToNetHTTP(t *testing.T) {
	addr := strictServer(t)
	for _, req := range []string{
		"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("x", http.DefaultMaxHeaderBytes+4096) + "\r\n\r\n",
	} {
		got, closed := converse(t, addr, req, 0, 1, true)
		if len(got) != 1 || got[0].status < 400 || !closed {
			t.Errorf("%.60q: got %v (closed %v), want a refusal and the connection closed", req, got, closed)
		}
	}
	// The server still serves.
	if got, _ := converse(t, addr, "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n", 0, 1, false); len(got) != 1 || got[0].status != 200 {
		t.Errorf("afterwards: %v", got)
	}
}

func TestHeadEnd(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{"GET / HTTP/1.1\r\n\r\n", 18},
		{"GET / HTTP/1.1\r\nA: b\r\n\r\nbody", 24},
		{"GET / HTTP/1.1\nA: b\n\nbody", 21},
		{"GET / HTTP/1.1\r\nA: b\r\n", -1},
		{"GET / HTTP/1.1", -1},
		{"\r\n", -1},
		{"\r\n\r\n", 4},
	} {
		if got := headEnd([]byte(tt.in)); got != tt.want {
			t.Errorf("headEnd(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
