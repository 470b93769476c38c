package ctrrt

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// A container runs in a network namespace of its own with only a loopback
// interface: no port is published on the host and replicas never collide.
// The worker reaches an HTTP container's $PORT by dialing from inside that
// namespace; the connection, once made, works from any thread.

var _ runtimeapi.Dialer = (*instance)(nil)

// DialContext implements runtimeapi.Dialer.
func (i *instance) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	select {
	case <-i.done:
		return nil, fmt.Errorf("container %s has exited", i.id)
	default:
	}
	return dialInNetns(ctx, fmt.Sprintf("/proc/%d/ns/net", i.task.Pid()), network, address)
}

// dialInNetns creates the socket on an OS thread moved into the network
// namespace at nsPath, then moves the thread back. A thread that cannot
// be moved back is never reused: its goroutine ends still locked to it,
// and Go then terminates the thread.
func dialInNetns(ctx context.Context, nsPath, network, address string) (net.Conn, error) {
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("opening the container's network namespace: %w", err)
	}
	defer target.Close()
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("opening the worker's network namespace: %w", err)}
			return
		}
		defer origin.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("entering the container's network namespace: %w", err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, address)
		if unix.Setns(int(origin.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}
