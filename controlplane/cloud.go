package controlplane

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cloud"
	"github.com/wasmorch/wasmorch/controlplane/cloud/local"
	"github.com/wasmorch/wasmorch/controlplane/cloud/plugin"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
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
		if _, external := c.NodeProviders[g.Provider]; external {
			errs = append(errs, fmt.Errorf("node group %s: provider %s is a plugin, which lists its own groups: configure the group there", g.Name, g.Provider))
		} else if g.Provider != local.Name {
			errs = append(errs, fmt.Errorf("node group %s: unknown provider %q (known: %s)", g.Name, g.Provider, local.Name))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.NodeProviders)) {
		switch socket := c.NodeProviders[name]; {
		case name == local.Name:
			errs = append(errs, fmt.Errorf("node provider %s: the name of the built-in provider; give the plugin another", name))
		case workloads.ValidateObjectName("node provider", name) != nil:
			errs = append(errs, workloads.ValidateObjectName("node provider", name))
		case !filepath.IsAbs(socket):
			errs = append(errs, fmt.Errorf("node provider %s: socket %q is not an absolute path", name, socket))
		}
	}
	if c.ScaleDownDelay < 0 {
		errs = append(errs, errors.New("scale-down delay must not be negative"))
	}
	return errs
}

// newProviders makes the providers: the local one for the configured
// groups, and a client of each external plugin (which connects when first
// asked: a plugin that is down does not stop the member).
func (s *Server) newProviders() ([]provider.Provider, error) {
	s.cloudMetrics = cloud.NewMetrics(s.metrics.registry)
	var out []provider.Provider
	for _, name := range slices.Sorted(maps.Keys(s.cfg.NodeProviders)) {
		p, err := plugin.Dial(name, s.cfg.NodeProviders[name])
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
	// The local provider is made even with no group of the config, for the
	// NodeGroup objects applied to the cluster.
	var locals []provider.NodeGroup
	for _, g := range s.cfg.NodeGroups {
		if g.Provider == local.Name {
			locals = append(locals, g)
		}
	}
	p, err := local.New(local.Config{
		DataDir: filepath.Join(s.cfg.DataDir, "cloud", local.Name),
		Groups:  locals,
		Logger:  s.log.With("component", "cloud"),
	})
	if err != nil {
		return out, err
	}
	out = append(out, p)
	s.api.SetNodeGroupHooks(func(g provider.NodeGroup) error { return checkNodeGroup(out, s.cfg.NodeProviders, g) }, func(name string) bool {
		return slices.ContainsFunc(s.cfg.NodeGroups, func(g provider.NodeGroup) bool { return g.Name == name })
	})
	return out, nil
}

// checkNodeGroup says why none of the member's providers can make a
// NodeGroup object's nodes (nil: one can).
func checkNodeGroup(providers []provider.Provider, plugins map[string]string, g provider.NodeGroup) error {
	if _, plugin := plugins[g.Provider]; plugin {
		return fmt.Errorf("node group %s: provider %s is a plugin, which lists its own groups: configure the group there", g.Name, g.Provider)
	}
	var known []string
	for _, p := range providers {
		if cp, ok := p.(provider.Configurable); ok {
			if p.Name() == g.Provider {
				return cp.CanMake(g)
			}
			known = append(known, p.Name())
		}
	}
	return fmt.Errorf("node group %s: unknown provider %q (known: %s)", g.Name, g.Provider, strings.Join(known, ", "))
}

// nodeServers are the API addresses a node the controller asks for joins
// at: this member's first, then the other members' (as they advertise
// themselves), so that a node still coming when the leader changes (a
// plugin's, which outlives it) joins through another. One read of the
// members' records a scale-up.
func (s *Server) nodeServers() []string {
	out := []string{dialableAddr(s.APIAddr())}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.store.Client.Get(ctx, store.MembersPrefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		s.log.Warn("reading the members for a new node's servers; it joins through this member only", "err", err)
		return out
	}
	for _, kv := range resp.Kvs {
		m := &v1.Member{}
		if proto.Unmarshal(kv.Value, m) != nil || m.GetApiAddress() == "" {
			continue
		}
		if a := dialableAddr(m.GetApiAddress()); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
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
		kv := store.Fenced(s.store.Client, el)
		nodes := s.api.CloudNodes(kv)
		c := cloud.New(cloud.Config{
			Cache: s.cache, KV: kv, Watcher: s.store.Client, Events: s.events, Logger: s.log, Providers: s.providers, Metrics: s.cloudMetrics,
			RemoveNode: nodes.Remove, SetCordoned: nodes.SetCordoned, Drain: nodes.Drain, LabelNode: nodes.Label,
			ScaleDownDelay: s.cfg.ScaleDownDelay, Configured: s.cfg.NodeGroups,
			Token: s.api.NodeToken, Servers: s.nodeServers,
		})
		_ = c.Start(ctx) // returns nil when ctx ends
	}()
	return done
}
