package controlplane

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/wasmorch/wasmorch/controlplane/cloud"
	"github.com/wasmorch/wasmorch/controlplane/cloud/local"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/store"
)

// The cloud controller's wiring (docs/cloud.md): the member makes the
// providers of its configured node groups, and its leader runs the
// controller beside the workload controller.

// validateCloud checks the node groups: each valid, named once, of a
// known provider.
func (c Config) validateCloud() []error {
	var errs []error
	seen := map[string]bool{}
	for _, g := range c.NodeGroups {
		if err := g.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[g.Name] {
			errs = append(errs, fmt.Errorf("node group %s is configured twice", g.Name))
		}
		seen[g.Name] = true
		if g.Provider != local.Name {
			errs = append(errs, fmt.Errorf("node group %s: unknown provider %q (known: %s)", g.Name, g.Provider, local.Name))
		}
	}
	if c.ScaleDownDelay < 0 {
		errs = append(errs, errors.New("scale-down delay must not be negative"))
	}
	return errs
}

// newProviders makes the providers of the configured groups.
func (s *Server) newProviders() ([]provider.Provider, error) {
	var locals []provider.NodeGroup
	for _, g := range s.cfg.NodeGroups {
		if g.Provider == local.Name {
			locals = append(locals, g)
		}
	}
	if len(locals) == 0 {
		return nil, nil
	}
	p, err := local.New(local.Config{
		Server:  func() string { return dialableAddr(s.APIAddr()) },
		DataDir: filepath.Join(s.cfg.DataDir, "cloud", local.Name),
		Token:   s.api.NodeToken,
		Groups:  locals,
		Logger:  s.log.With("component", "cloud"),
	})
	if err != nil {
		return nil, err
	}
	return []provider.Provider{p}, nil
}

func (s *Server) closeProviders() {
	for _, p := range s.providers {
		if err := p.Close(); err != nil {
			s.log.Warn("closing node provider", "provider", p.Name(), "err", err)
		}
	}
}

// runCloud runs the cloud controller of this leadership until ctx ends;
// the channel is closed when it has returned.
func (s *Server) runCloud(ctx context.Context, el *concurrency.Election) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := cloud.New(cloud.Config{
			Cache: s.cache, KV: store.Fenced(s.store.Client, el), Events: s.events, Logger: s.log, Providers: s.providers,
			RemoveNode: s.api.RemoveNodeForced, SetCordoned: s.api.SetCordoned, ScaleDownDelay: s.cfg.ScaleDownDelay,
		})
		_ = c.Start(ctx) // returns nil when ctx ends
	}()
	return done
}
