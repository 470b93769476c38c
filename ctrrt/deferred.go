package ctrrt

import (
	"context"
	"fmt"
	"sync"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// Deferred is the container runtime of a worker that started before
// containerd answered: it connects (New) the first time Serving finds
// containerd there, and until then is not Serving, so that the worker does
// not offer it, and refuses to prepare or start anything.
type Deferred struct {
	cfg Config

	connectMu sync.Mutex // one connection attempt at a time

	mu     sync.Mutex
	rt     *Runtime
	closed bool
}

var (
	_ runtimeapi.Runtime = (*Deferred)(nil)
	_ runtimeapi.Adopter = (*Deferred)(nil)
)

// NewDeferred checks cfg and returns a runtime that connects later.
func NewDeferred(cfg Config) (*Deferred, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Deferred{cfg: cfg.withDefaults()}, nil
}

func (d *Deferred) runtime() *Runtime {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rt
}

// Name implements runtimeapi.Runtime.
func (d *Deferred) Name() string { return "container" }

// Serving reports whether containerd answers, connecting to it the first
// time it does.
func (d *Deferred) Serving(ctx context.Context) bool {
	if rt := d.runtime(); rt != nil {
		return rt.Serving(ctx)
	}
	d.connectMu.Lock()
	defer d.connectMu.Unlock()
	if rt := d.runtime(); rt != nil {
		return rt.Serving(ctx)
	}
	rt, err := New(ctx, d.cfg)
	if err != nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		_ = rt.Close(cctx)
		return false
	}
	d.rt = rt
	d.cfg.Logger.Info("containerd answers: the container runtime is connected", "containerd-socket", d.cfg.Socket)
	return true
}

func (d *Deferred) notConnected() error {
	return startError(false, runtimeapi.ReasonStartError, fmt.Sprintf("containerd has not answered on %s yet", d.cfg.Socket))
}

// Prepare implements runtimeapi.Runtime.
func (d *Deferred) Prepare(ctx context.Context, a runtimeapi.Artifact, memoryBytes int64) error {
	if rt := d.runtime(); rt != nil {
		return rt.Prepare(ctx, a, memoryBytes)
	}
	return d.notConnected()
}

// Release implements runtimeapi.Runtime.
func (d *Deferred) Release(a runtimeapi.Artifact) {
	if rt := d.runtime(); rt != nil {
		rt.Release(a)
	}
}

// Start implements runtimeapi.Runtime.
func (d *Deferred) Start(ctx context.Context, spec runtimeapi.InstanceSpec) (runtimeapi.Instance, error) {
	if rt := d.runtime(); rt != nil {
		return rt.Start(ctx, spec)
	}
	return nil, d.notConnected()
}

// RemoveUnwanted implements runtimeapi.Adopter. Before containerd answers
// there is nothing it could remove; the worker asks again once the runtime
// is offered.
func (d *Deferred) RemoveUnwanted(ctx context.Context, keep map[string]bool) error {
	if rt := d.runtime(); rt != nil {
		return rt.RemoveUnwanted(ctx, keep)
	}
	return nil
}

// Close implements runtimeapi.Runtime; it is safe to call more than once.
func (d *Deferred) Close(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	rt := d.rt
	d.mu.Unlock()
	if rt != nil {
		return rt.Close(ctx)
	}
	return nil
}
