package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// requestLimit bounds one HTTP request to the gateway, so that a hang ends
// the test; nothing is asserted about how fast a function answers.
const requestLimit = 2 * time.Minute

// reply is a gateway's answer.
type reply struct {
	status int
	header http.Header
	body   string
}

// request is one HTTP request to the cluster's gateway.
type request struct {
	method, path string
	host         string // empty: the gateway's address
	header       map[string]string
	body         io.Reader
}

// do sends r to the gateway and reads the whole answer; ctx may cut it
// short (the error is then returned rather than failing the test).
func (c *cluster) do(ctx context.Context, r request) (reply, error) {
	method := r.method
	if method == "" {
		method = http.MethodGet
	}
	ctx, cancel := context.WithTimeout(ctx, requestLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.http+r.path, r.body)
	if err != nil {
		return reply{}, err
	}
	if r.host != "" {
		req.Host = r.host
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

// call sends r and fails the test if no answer comes.
func (c *cluster) call(r request) reply {
	c.t.Helper()
	rep, err := c.do(context.Background(), r)
	if err != nil {
		c.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	return rep
}

// waitRouted polls until the gateway routes path to a ready replica:
// deploy returns once the replica runs, and the gateway's table follows
// the cluster a moment later. The probe announces a body larger than any
// function may accept, which the gateway refuses (413) only once it has
// found a route with a ready replica, and before the function runs.
func (c *cluster) waitRouted(path, host string) {
	c.t.Helper()
	if host == "" {
		host = c.http
	}
	eventually(c.t, "gateway routes "+host+path, func() (bool, string) {
		status, err := c.probe(path, host)
		if err != nil {
			return false, err.Error()
		}
		return strings.HasPrefix(status, "HTTP/1.1 413 "), status
	})
}

// probe sends a request head announcing a 2 GiB body, and no body, and
// returns the status line of the answer.
func (c *cluster) probe(path, host string) (string, error) {
	conn, err := net.DialTimeout("tcp", c.http, requestLimit)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(requestLimit)); err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", path, host, int64(2)<<30); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// deployFunction deploys a module as an HTTP function and waits until the
// gateway routes to it.
func (c *cluster) deployFunction(module, name, route string, flags ...string) {
	c.t.Helper()
	args := append([]string{"deploy", module, "--name", name, "--route", route}, flags...)
	c.mustRun(args...)
	host := ""
	for i, f := range flags {
		if f == "--host" && i+1 < len(flags) {
			host = flags[i+1]
		}
	}
	c.waitRouted(route, host)
}

// expect checks an answer's status and that its body contains want.
func expect(t *testing.T, what string, got reply, status int, want string) {
	t.Helper()
	if got.status != status || !strings.Contains(got.body, want) {
		t.Errorf("%s: got %d %q, want %d and a body containing %q", what, got.status, got.body, status, want)
	}
}
