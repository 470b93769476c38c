package runtimeapi

import (
	"context"
	"net"
)

// Dialer is an Instance with a network of its own (a container in its
// network namespace) that the worker can connect into: an HTTP container
// function listens on $PORT there, and the worker's function server
// forwards its requests to it.
type Dialer interface {
	Instance
	// DialContext connects to address ("127.0.0.1:8080") as seen from
	// inside the instance's network.
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}
