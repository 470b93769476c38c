package cloud

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// What the controller keeps in etcd and how it reads it without polling:
//
//   - the scale-ups in flight (ScaleUpsPrefix) and when each node was asked
//     for (AskedPrefix) are written only by the leader, through its fence:
//     a leadership reads them once, at its first pass, and keeps its own
//     writes in memory after;
//   - the applied NodeGroup objects (SpecsPrefix), which any member's API
//     writes, are read once and then followed through an etcd watch
//     (watchSpecs), which wakes a pass when one changes.
//
// So a pass reads nothing from etcd while nothing changes.

// AskedPrefix holds, per node the controller asked a provider for and that
// has not joined yet, when it was asked for (JSON askedNode), written with
// the scale-up: a new leader measures the never-joined timeout from then,
// not from when it first saw the node.
const AskedPrefix = store.CloudPrefix + "asked/"

// askedNode is a node asked for, as recorded in etcd.
type askedNode struct {
	Group      string `json:"group"`
	AtUnixNano int64  `json:"atUnixNano"`
}

// loadRecords reads the scale-ups in flight and the nodes asked for, once
// a leadership.
func (c *Controller) loadRecords(ctx context.Context) error {
	if c.recs != nil {
		return nil
	}
	recs, asked := map[string]scaleUp{}, map[string]askedNode{}
	resp, err := c.cfg.KV.Get(ctx, ScaleUpsPrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("reading the scale-ups in flight: %w", err)
	}
	for _, kv := range resp.Kvs {
		var su scaleUp
		if err := json.Unmarshal(kv.Value, &su); err != nil {
			su = scaleUp{} // unreadable: forgotten at the next pass
		}
		recs[strings.TrimPrefix(string(kv.Key), ScaleUpsPrefix)] = su
	}
	resp, err = c.cfg.KV.Get(ctx, AskedPrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("reading the nodes asked for: %w", err)
	}
	for _, kv := range resp.Kvs {
		var a askedNode
		if json.Unmarshal(kv.Value, &a) == nil {
			asked[strings.TrimPrefix(string(kv.Key), AskedPrefix)] = a
		}
	}
	c.recs, c.asked = recs, asked
	return nil
}

// unask deletes the records of nodes asked for that have joined, were
// deleted or are no longer coming.
func (c *Controller) unask(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	ops := make([]clientv3.Op, len(names))
	for i, n := range names {
		ops[i] = clientv3.OpDelete(AskedPrefix + n)
	}
	if _, err := c.cfg.KV.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("forgetting the nodes asked for: %w", err)
	}
	for _, n := range names {
		delete(c.asked, n)
	}
	return nil
}

// sweepAsked forgets the nodes asked for of group that have joined (in
// nodes) or that its provider does not list long after they were asked
// for (they are not coming).
func (c *Controller) sweepAsked(ctx context.Context, group string, listed map[string]bool, joined map[string]bool) error {
	var done []string
	for name, a := range c.asked {
		if a.Group != group {
			continue
		}
		old := c.cfg.Now().Sub(time.Unix(0, a.AtUnixNano)) > c.cfg.ProvisionTimeout
		if joined[name] || !listed[name] && old {
			done = append(done, name)
		}
	}
	return c.unask(ctx, done)
}

// loadSpecs reads the applied NodeGroup objects and the revision they were
// read at.
func (c *Controller) loadSpecs(ctx context.Context) error {
	resp, err := c.cfg.KV.Get(ctx, SpecsPrefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	specs := map[string]*v1.NodeGroupSpec{}
	for _, kv := range resp.Kvs {
		spec := &v1.NodeGroupSpec{}
		if proto.Unmarshal(kv.Value, spec) == nil {
			specs[strings.TrimPrefix(string(kv.Key), SpecsPrefix)] = spec
		}
	}
	c.specsMu.Lock()
	defer c.specsMu.Unlock()
	first := c.specs == nil
	c.specs, c.specsRev = specs, resp.Header.Revision
	if first {
		close(c.specsLoaded)
	}
	return nil
}

// appliedSpecs returns the applied NodeGroup objects (shared: never
// modified), reading them first if no pass has yet.
func (c *Controller) appliedSpecs(ctx context.Context) (map[string]*v1.NodeGroupSpec, error) {
	c.specsMu.Lock()
	specs := c.specs
	c.specsMu.Unlock()
	if specs != nil {
		return specs, nil
	}
	if err := c.loadSpecs(ctx); err != nil {
		return nil, err
	}
	c.specsMu.Lock()
	defer c.specsMu.Unlock()
	return c.specs, nil
}

// watchSpecs follows the applied NodeGroup objects from the revision the
// first pass read them at, keeping c.specs current and calling wake on
// each change; it returns when ctx ends. A watch that etcd cancels (its
// revision compacted) reads the objects again.
func (c *Controller) watchSpecs(ctx context.Context, wake func()) {
	select {
	case <-ctx.Done():
		return
	case <-c.specsLoaded:
	}
	for ctx.Err() == nil {
		c.specsMu.Lock()
		rev := c.specsRev
		c.specsMu.Unlock()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		lost := false
		for resp := range c.cfg.Watcher.Watch(wctx, SpecsPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if err := resp.Err(); err != nil {
				lost = true
				break
			}
			c.specsMu.Lock()
			specs := make(map[string]*v1.NodeGroupSpec, len(c.specs))
			for k, v := range c.specs {
				specs[k] = v
			}
			for _, ev := range resp.Events {
				name := strings.TrimPrefix(string(ev.Kv.Key), SpecsPrefix)
				spec := &v1.NodeGroupSpec{}
				if ev.Type == clientv3.EventTypeDelete || proto.Unmarshal(ev.Kv.Value, spec) != nil {
					delete(specs, name)
				} else {
					specs[name] = spec
				}
			}
			c.specs, c.specsRev = specs, resp.Header.Revision
			c.specsMu.Unlock()
			if len(resp.Events) > 0 {
				wake()
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if lost {
			if err := c.loadSpecs(ctx); err != nil {
				c.log.Warn("reading the applied node groups again; retrying", "err", err)
			} else {
				wake()
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
