package cliclient

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/manifest"
	"github.com/wasmorch/wasmorch/internal/registry"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// ApplyResult is what apply did (or, for diff, would do) to one object.
type ApplyResult struct {
	Kind    string // Workload, Config, Secret or NodeGroup
	Name    string
	Outcome string   // created, configured or unchanged
	Changes []string // for diff: what changes, one line each (never a secret's value)
	Rolled  []string // workloads a config or secret change rolls
}

// ID is the object's kind/name, as apply prints it.
func (r ApplyResult) ID() string { return strings.ToLower(r.Kind) + "/" + r.Name }

// Apply applies a manifest's objects: configs and secrets first, so that
// the workloads that use them find them. Every object is first checked by
// a dry run, so that a bad object stops the apply before anything is
// written. dir is where relative module paths start. With dryRun (diff)
// nothing is written and each result lists what would change.
func (c *Client) Apply(ctx context.Context, objs []manifest.Object, dir string, dryRun bool) ([]ApplyResult, error) {
	objs = append([]manifest.Object(nil), objs...)
	// Node groups first: a workload that needs one's nodes can ask for them.
	order := map[string]int{manifest.KindNodeGroup: -1, manifest.KindConfig: 0, manifest.KindSecret: 1, manifest.KindWorkload: 2}
	sort.SliceStable(objs, func(i, j int) bool { return order[objs[i].Kind] < order[objs[j].Kind] })
	if err := c.checkReferences(ctx, objs); err != nil {
		return nil, err
	}
	checked := make([]ApplyResult, len(objs))
	for i, o := range objs {
		r, err := c.applyObject(ctx, o, dir, true)
		if err != nil {
			return nil, err
		}
		checked[i] = r
	}
	if dryRun {
		return checked, nil
	}
	results := make([]ApplyResult, 0, len(objs))
	for i, o := range objs {
		if checked[i].Outcome == "unchanged" {
			results = append(results, checked[i])
			continue
		}
		r, err := c.applyObject(ctx, o, dir, false)
		if err != nil {
			return results, err
		}
		results = append(results, r)
	}
	return results, nil
}

// checkReferences fails if a workload names a config or secret that
// neither the manifest nor the cluster has.
func (c *Client) checkReferences(ctx context.Context, objs []manifest.Object) error {
	defined := map[string]bool{}
	for _, o := range objs {
		defined[o.Kind+"/"+o.Metadata.Name] = true
	}
	for _, o := range objs {
		if o.Kind != manifest.KindWorkload {
			continue
		}
		for _, ref := range []struct {
			kind  string
			names []string
			get   func(string) error
		}{
			{manifest.KindConfig, slices.Concat(o.Spec.Configs, o.Spec.ConfigFiles), func(n string) error { _, err := c.GetConfig(ctx, n); return err }},
			{manifest.KindSecret, slices.Concat(o.Spec.Secrets, o.Spec.SecretFiles), func(n string) error { _, err := c.GetSecret(ctx, n); return err }},
		} {
			for _, n := range ref.names {
				if defined[ref.kind+"/"+n] {
					continue
				}
				if err := ref.get(n); errdefs.IsNotFound(err) {
					return Errorf(fmt.Sprintf("add a %s named %s to the manifest or create it first", ref.kind, n),
						"workload %s (line %d) uses %s %q, which does not exist", o.Metadata.Name, o.Line, strings.ToLower(ref.kind), n)
				} else if err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (c *Client) applyObject(ctx context.Context, o manifest.Object, dir string, dryRun bool) (ApplyResult, error) {
	r := ApplyResult{Kind: o.Kind, Name: o.Metadata.Name}
	at := func(err error) error {
		if e, ok := err.(*Error); ok {
			e.What = fmt.Sprintf("%s (line %d): %s", r.ID(), o.Line, e.What)
			return e
		}
		return fmt.Errorf("%s (line %d): %w", r.ID(), o.Line, err)
	}
	switch o.Kind {
	case manifest.KindConfig:
		var before map[string]string
		if dryRun {
			if cur, err := c.GetConfig(ctx, o.Metadata.Name); err == nil {
				before = cur.GetData()
			} else if !errdefs.IsNotFound(err) {
				return r, at(err)
			}
		}
		resp, err := c.SetConfig(ctx, o.Metadata.Name, o.Data, dryRun)
		if err != nil {
			return r, at(err)
		}
		r.Outcome, r.Rolled = Outcome(resp.GetCreated(), resp.GetChanged()), resp.GetRolled()
		if resp.GetChanged() {
			r.Changes = configChanges(before, o.Data)
		}
	case manifest.KindSecret:
		resp, err := c.SetSecret(ctx, o.Metadata.Name, o.Data, dryRun)
		if err != nil {
			return r, at(err)
		}
		r.Outcome, r.Rolled = Outcome(resp.GetCreated(), resp.GetChanged()), resp.GetRolled()
		for _, k := range resp.GetChangedKeys() {
			r.Changes = append(r.Changes, "~ "+k+" (value hidden)")
		}
	case manifest.KindNodeGroup: // cloud (nodegroups.go)
		resp, err := c.ApplyNodeGroup(ctx, o, dryRun)
		if err != nil {
			return r, at(err)
		}
		r.Outcome, r.Changes = Outcome(resp.GetCreated(), resp.GetChanged()), resp.GetChanges()
	case manifest.KindWorkload:
		if o.Dir != "" {
			dir = o.Dir
		}
		resp, before, err := c.applyWorkload(ctx, WorkloadConfig(o, dir), dryRun)
		if err != nil {
			return r, at(err)
		}
		r.Outcome = Outcome(resp.GetCreated(), resp.GetChanged())
		if dryRun && resp.GetChanged() && !resp.GetCreated() {
			r.Changes = specChanges(before, resp.GetWorkload().GetSpec())
		}
	}
	return r, nil
}

// WorkloadConfig is the deploy a Workload object stands for; dir is where
// a relative module path starts.
func WorkloadConfig(o manifest.Object, dir string) DeployConfig {
	s := o.Spec
	cfg := DeployConfig{
		Name: o.Metadata.Name, Replicas: 1, Image: s.Image, Args: s.Args, Memory: s.Memory, Scratch: s.Scratch, Volumes: s.Volumes, Mounts: s.Mounts, Restart: s.Restart,
		CPU: s.CPU, Spread: s.Spread, Arch: s.Arch, OS: s.OS, FallbackImage: s.FallbackImage, Port: s.Port, TCP: s.TCP,
		Configs: s.Configs, Secrets: s.Secrets, ConfigFiles: s.ConfigFiles, SecretFiles: s.SecretFiles, NoWait: true,
		MaxSurge: s.MaxSurge, MaxUnavailable: s.MaxUnavailable, ChangeCause: "apply", // rollouts
		Canary: s.Canary, CanaryDuration: s.CanaryDuration,
	}
	if s.Module != "" {
		cfg.File, cfg.Runtime = s.Module, s.Runtime
		if !filepath.IsAbs(cfg.File) && !manifest.IsDigest(cfg.File) && !registry.IsReference(cfg.File) {
			cfg.File = filepath.Join(dir, cfg.File)
		}
	}
	if s.FallbackImage != "" && strings.HasSuffix(s.FallbackImage, ".tar") && !filepath.IsAbs(s.FallbackImage) {
		cfg.FallbackImage = filepath.Join(dir, s.FallbackImage)
	}
	if s.Replicas != nil {
		cfg.Replicas = *s.Replicas
	}
	for _, e := range s.Env { // in order: a mapping is sorted by key
		cfg.Env = append(cfg.Env, e.Name+"="+e.Value)
	}
	for _, k := range sortedKeys(s.Selector) {
		cfg.Selector = append(cfg.Selector, k+"="+s.Selector[k])
	}
	for _, k := range sortedKeys(o.Metadata.Labels) {
		cfg.Labels = append(cfg.Labels, k+"="+o.Metadata.Labels[k])
	}
	if h := s.HTTP; h != nil {
		cfg.Function = FunctionConfig{Route: h.Route, Host: h.Host, RequestTimeout: h.Timeout, MaxBody: h.MaxBody,
			Concurrency: h.Concurrency, Queue: h.Queue, MinReplicas: h.MinReplicas, MaxReplicas: h.MaxReplicas,
			Target: h.TargetConcurrency, Idle: h.Idle, HealthPath: h.HealthPath, HealthInterval: h.HealthInterval}
	}
	return cfg
}

// applyWorkload builds the spec as deploy does and applies it without
// waiting; with dryRun it uploads nothing and also returns the current
// spec (nil when there is none).
func (c *Client) applyWorkload(ctx context.Context, cfg DeployConfig, dryRun bool) (*wasmorchv1.ApplyWorkloadResponse, *wasmorchv1.WorkloadSpec, error) {
	name, spec, err := cfg.request()
	if err != nil {
		return nil, nil, err
	}
	labels, err := cfg.labels()
	if err != nil {
		return nil, nil, err
	}
	var wasm []byte
	var media string
	if ref := cfg.reference(); ref != "" { // registry.go: pulled even for a dry run, to compare digests
		err = c.pullSource(ctx, ref, 0, spec)
	} else {
		wasm, media, err = readSource(ctx, cfg, spec)
	}
	if err != nil {
		return nil, nil, err
	}
	fallback, err := readFallback(cfg, spec)
	if err != nil {
		return nil, nil, err
	}
	var before *wasmorchv1.WorkloadSpec
	if dryRun {
		if cur, err := call(ctx, c, name, c.api.GetWorkload, &wasmorchv1.GetWorkloadRequest{Name: name}); err == nil {
			before = cur.GetWorkload().GetSpec()
		} else if !errdefs.IsNotFound(err) {
			return nil, nil, err
		}
	} else {
		if wasm != nil {
			if err := c.upload(ctx, spec.ModuleDigest, wasm, media); err != nil {
				return nil, nil, err
			}
		}
		if fallback != nil {
			if err := c.upload(ctx, spec.FallbackArchiveDigest, fallback, ociarchive.MediaType); err != nil {
				return nil, nil, err
			}
		}
	}
	resp, err := call(ctx, c, name, c.api.ApplyWorkload, &wasmorchv1.ApplyWorkloadRequest{Name: name, Spec: spec, DryRun: dryRun, ChangeCause: cfg.ChangeCause, Labels: labels})
	return resp, before, err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// configChanges lists a config's changes, values included.
func configChanges(before, after map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(after) {
		switch old, ok := before[k]; {
		case !ok:
			out = append(out, fmt.Sprintf("+ %s: %s", k, after[k]))
		case old != after[k]:
			out = append(out, fmt.Sprintf("~ %s: %s -> %s", k, old, after[k]))
		}
	}
	for _, k := range sortedKeys(before) {
		if _, ok := after[k]; !ok {
			out = append(out, fmt.Sprintf("- %s", k))
		}
	}
	return out
}

// specChanges lists the top-level spec fields that differ, as JSON.
func specChanges(before, after *wasmorchv1.WorkloadSpec) []string {
	fields := func(s *wasmorchv1.WorkloadSpec) map[string]string {
		out := map[string]string{}
		raw := map[string]json.RawMessage{}
		if b, err := protojson.Marshal(s); err == nil && json.Unmarshal(b, &raw) == nil {
			for k, v := range raw {
				out[k] = string(v)
			}
		}
		return out
	}
	b, a := fields(before), fields(after)
	keys := map[string]string{}
	for k := range a {
		keys[k] = ""
	}
	for k := range b {
		keys[k] = ""
	}
	var out []string
	for _, k := range sortedKeys(keys) {
		if a[k] != b[k] {
			out = append(out, fmt.Sprintf("~ %s: %s -> %s", k, orNone(b[k]), orNone(a[k])))
		}
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
