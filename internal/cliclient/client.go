// Package cliclient is the CLI's side of the Control API: it connects with
// short timeouts, turns every failure into one line that says what was
// wrong and what to do, and runs the client flows (deploy: validate,
// upload, apply, wait; logs; scale; delete). cmd/wasmorch only fills its
// configs from flags and prints what it returns.
package cliclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/internal/cliout"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Timeouts of a client. Connecting is bounded tightly so that a missing
// server is reported in seconds; a call to a connected server may take
// longer on a busy machine.
const (
	DefaultConnectTimeout = 3 * time.Second
	DefaultCallTimeout    = 30 * time.Second
)

// Client talks to one control-plane member.
type Client struct {
	// Command is the CLI command running, for hints ("deploy").
	Command string
	// ConnectTimeout bounds the first connection; CallTimeout each unary
	// call after it.
	ConnectTimeout time.Duration
	CallTimeout    time.Duration

	addr  string
	conn  *grpc.ClientConn
	api   wasmorchv1.ControlClient
	dials *dialLog
	opts  dialOptions // the credential (creds.go)

	mu        sync.Mutex
	connected bool
}

// Dial prepares a client for the server at addr (HOST:PORT). It does not
// connect: the first call does, so commands that fail on their own input
// never touch the network. Every connection is TLS; the credential
// (WithCredential) proves who the client is and which cluster it trusts.
func Dial(addr, command string, options ...DialOption) (*Client, error) {
	var o dialOptions
	for _, opt := range options {
		opt(&o)
	}
	// Several members, comma-separated: the connection goes to the first
	// that answers, and moves to another if that one goes away.
	var addrs []resolver.Address
	for _, a := range strings.Split(addr, ",") {
		a = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, Errorf("set --server or WASMORCH_SERVER to HOST:PORT[,HOST:PORT...], e.g. 127.0.0.1:7070", "the server address %q is not HOST:PORT", a)
		}
		addrs = append(addrs, resolver.Address{Addr: a})
	}
	target, opts := "passthrough:///"+addr, []grpc.DialOption(nil)
	if len(addrs) > 1 {
		r := manual.NewBuilderWithScheme("wasmorch-members")
		r.InitialState(resolver.State{Addresses: addrs})
		target, opts = r.Scheme()+":///members", []grpc.DialOption{grpc.WithResolvers(r)}
	}
	d := &dialLog{}
	conn, err := grpc.NewClient(target, append(opts,
		grpc.WithTransportCredentials(o.transport(d)),
		grpc.WithContextDialer(d.dial),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: DefaultConnectTimeout}),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(false)),
	)...)
	if err != nil {
		return nil, Errorf("set --server or WASMORCH_SERVER to HOST:PORT", "cannot use the server address %q: %v", addr, err)
	}
	return &Client{
		Command:        command,
		ConnectTimeout: DefaultConnectTimeout,
		CallTimeout:    DefaultCallTimeout,
		addr:           addr,
		conn:           conn,
		api:            wasmorchv1.NewControlClient(conn),
		dials:          d,
		opts:           o,
	}, nil
}

// Addr is the server's address.
func (c *Client) Addr() string { return c.addr }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// connect waits, at most ConnectTimeout, until the connection is up, and
// fails at once if the server refuses it. Later calls reuse it.
func (c *Client) connect(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.connected {
		return nil
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.ConnectTimeout)
	defer cancel()
	c.conn.Connect()
	for {
		s := c.conn.GetState()
		switch s {
		case connectivity.Ready:
			c.connected = true
			return nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			if herr := c.dials.handshakeFailure(); herr != nil {
				return c.credentialError(herr)
			}
			why, cause, _ := c.dials.unreachable()
			return c.unreachable(why, cause)
		}
		if !c.conn.WaitForStateChange(ctx, s) {
			if errors.Is(parent.Err(), context.Canceled) {
				return c.failure(parent.Err(), "")
			}
			why, cause, ok := c.dials.unreachable()
			if !ok {
				why = fmt.Sprintf("no answer within %s", c.ConnectTimeout)
			}
			return c.unreachable(why, cause)
		}
	}
}

// call runs one unary call with the call timeout, connecting first.
func call[Req, Resp any](ctx context.Context, c *Client, workload string, rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var zero Resp
	if err := c.connect(ctx); err != nil {
		return zero, err
	}
	if m, ok := any(req).(proto.Message); ok {
		if n := proto.Size(m); n > MaxRequestBytes {
			return zero, tooLarge(m, n)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.CallTimeout)
	defer cancel()
	resp, err := rpc(ctx, req)
	if err != nil {
		return zero, c.failure(err, workload)
	}
	return resp, nil
}

// Scale sets a workload's replica count.
func (c *Client) Scale(ctx context.Context, name string, replicas int) (cliout.Workload, error) {
	if replicas < 0 || replicas > maxReplicas {
		return cliout.Workload{}, Errorf("e.g. 'wasmorch scale "+name+" --replicas 3'", "--replicas %d is out of range (0 to %d)", replicas, maxReplicas)
	}
	w, err := call(ctx, c, name, c.api.ScaleWorkload, &wasmorchv1.ScaleRequest{Name: name, Replicas: int32(replicas)})
	if err != nil {
		return cliout.Workload{}, err
	}
	return cliout.WorkloadFrom(&wasmorchv1.WorkloadView{Workload: w}), nil
}

// Delete removes a workload; its instances stop.
func (c *Client) Delete(ctx context.Context, name string) error {
	_, err := call(ctx, c, name, c.api.DeleteWorkload, &wasmorchv1.DeleteWorkloadRequest{Name: name})
	return err
}

// ServerVersion asks the server for its version and member name.
func (c *Client) ServerVersion(ctx context.Context) (version, member string, err error) {
	resp, err := call(ctx, c, "", c.api.Version, &wasmorchv1.VersionRequest{})
	if err != nil {
		return "", "", err
	}
	return resp.GetVersion(), resp.GetMember(), nil
}

// dialLog remembers how the latest connection attempt went, so that a
// failed call can say why the server was unreachable (refused, unknown
// host ...) from the dial error's type instead of gRPC's message.
type dialLog struct {
	mu           sync.Mutex
	handshakeErr error // the latest TLS handshake's (creds.go)
	lastErr      error
	connected    bool // the latest attempt succeeded
	attempted    bool
}

func (d *dialLog) dial(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.attempted = true
	d.lastErr = err
	d.connected = err == nil
	return conn, err
}

// unreachable reports whether the server is out of reach (the latest
// attempt failed, or none has finished yet) and why.
func (d *dialLog) unreachable() (why string, cause error, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case !d.attempted:
		return "no answer", nil, true
	case d.connected:
		return "", nil, false
	}
	return dialReason(d.lastErr), d.lastErr, true
}
