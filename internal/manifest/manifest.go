// Package manifest reads wasmorch manifests: multi-document YAML whose
// documents (apiVersion wasmorch.dev/v1, kind Workload, Config, Secret or
// NodeGroup)
// map one-to-one onto the API's objects; docs/manifests.md is the schema.
// Decoding is strict: an unknown or misplaced field is an error naming its
// line, so that a typo never silently does nothing.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// APIVersion is the only apiVersion this version reads.
const APIVersion = "wasmorch.dev/v1"

// The kinds of object a manifest holds.
const (
	KindWorkload = "Workload"
	KindConfig   = "Config"
	KindSecret   = "Secret"
	// KindNodeGroup is a group of nodes the cloud controller grows and
	// shrinks (docs/cloud.md).
	KindNodeGroup = "NodeGroup"
)

// Object is one document of a manifest.
type Object struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   Metadata          `yaml:"metadata"`
	Spec       *WorkloadSpec     `yaml:"spec,omitempty"` // Workload
	Data       map[string]string `yaml:"data,omitempty"` // Config and Secret
	// Status is what `get workloads -o yaml` adds: read-only, ignored
	// by apply.
	Status *WorkloadStatus `yaml:"status,omitempty"`
	// NodeGroup is a NodeGroup's spec (its document's spec, decoded
	// apart: nodeGroupDoc).
	NodeGroup *NodeGroupSpec `yaml:"-"`
	// Line is where the document starts, for messages.
	Line int `yaml:"-"`
	// File is the manifest it came from, as named to Parse; Dir, when
	// set, is where its relative module paths start.
	File string `yaml:"-"`
	Dir  string `yaml:"-"`
}

// Metadata names an object, and labels a workload.
type Metadata struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels,omitempty"`
}

// WorkloadSpec is a workload as deploy's flags describe it.
type WorkloadSpec struct {
	// Module is a .wasm or OCI archive path, relative to the manifest,
	// or the digest ("sha256:...") of one uploaded already; Runtime says
	// what such a digest is ("container" for an image archive; default
	// wasm).
	Module        string            `yaml:"module,omitempty"`
	Runtime       string            `yaml:"runtime,omitempty"`
	Image         string            `yaml:"image,omitempty"`
	Replicas      *int              `yaml:"replicas,omitempty"` // default 1
	Args          []string          `yaml:"args,omitempty"`
	Env           Env               `yaml:"env,omitempty"`
	Configs       []string          `yaml:"configs,omitempty"`
	Secrets       []string          `yaml:"secrets,omitempty"`
	ConfigFiles   []string          `yaml:"configFiles,omitempty"` // /config/<name>/<key>
	SecretFiles   []string          `yaml:"secretFiles,omitempty"` // /secrets/<name>/<key>
	Memory        string            `yaml:"memory,omitempty"`
	Scratch       string            `yaml:"scratch,omitempty"` // state: a writable /tmp of this size
	Volumes       []string          `yaml:"volumes,omitempty"` // state: named volumes, NAME:/PATH
	Mounts        []string          `yaml:"mounts,omitempty"`  // state: host directories, HOST:/PATH[:ro]
	Restart       string            `yaml:"restart,omitempty"`
	CPU           string            `yaml:"cpu,omitempty"`
	Selector      map[string]string `yaml:"selector,omitempty"`
	Spread        string            `yaml:"spread,omitempty"`
	Arch          []string          `yaml:"arch,omitempty"`
	OS            []string          `yaml:"os,omitempty"`
	FallbackImage string            `yaml:"fallbackImage,omitempty"`
	Port          int               `yaml:"port,omitempty"`
	TCP           bool              `yaml:"tcp,omitempty"` // services: a plain TCP Wasm service on the node's port
	HTTP          *HTTP             `yaml:"http,omitempty"`
	// rollouts: a count or a percentage of replicas ("25%", the default)
	MaxSurge       string `yaml:"maxSurge,omitempty"`
	MaxUnavailable string `yaml:"maxUnavailable,omitempty"`
	// canary: a function's share of the traffic for a new revision
	// ("10%") until it is promoted, by hand or after canaryDuration
	Canary         string        `yaml:"canary,omitempty"`
	CanaryDuration time.Duration `yaml:"canaryDuration,omitempty"`
}

// NodeGroupSpec is a node group as server --node-group describes one
// (docs/cloud.md): its provider, bounds and the template of its nodes.
type NodeGroupSpec struct {
	Provider  string            `yaml:"provider"`
	Min       int               `yaml:"min,omitempty"`
	Max       int               `yaml:"max"`
	Instances int               `yaml:"instances"` // per node
	Zone      string            `yaml:"zone,omitempty"`
	Labels    map[string]string `yaml:"labels,omitempty"` // of its nodes
	Arch      string            `yaml:"arch,omitempty"`
	Memory    string            `yaml:"memory,omitempty"` // of a node, "8Gi"
	CPU       string            `yaml:"cpu,omitempty"`    // of a node, "4000m" or "4"
	Runtimes  []string          `yaml:"runtimes,omitempty"`
	// InstanceType is the machine type, its nodes' wasmorch.io/instance-type.
	InstanceType string `yaml:"instanceType,omitempty"`
}

// nodeGroupDoc is a NodeGroup document, whose spec is a NodeGroupSpec.
type nodeGroupDoc struct {
	APIVersion string         `yaml:"apiVersion"`
	Kind       string         `yaml:"kind"`
	Metadata   Metadata       `yaml:"metadata"`
	Spec       *NodeGroupSpec `yaml:"spec"`
}

// HTTP makes a workload a function, as deploy's function flags do.
type HTTP struct {
	Route             string        `yaml:"route,omitempty"`
	Host              string        `yaml:"host,omitempty"`
	Timeout           time.Duration `yaml:"timeout,omitempty"`
	MaxBody           string        `yaml:"maxBody,omitempty"`
	Concurrency       int           `yaml:"concurrency,omitempty"`
	Queue             int           `yaml:"queue,omitempty"`
	MinReplicas       int           `yaml:"minReplicas,omitempty"`
	MaxReplicas       int           `yaml:"maxReplicas,omitempty"`
	TargetConcurrency int           `yaml:"targetConcurrency,omitempty"`
	Idle              time.Duration `yaml:"idle,omitempty"`
	// rollouts: readiness by a health path under the route
	HealthPath     string        `yaml:"healthPath,omitempty"`
	HealthInterval time.Duration `yaml:"healthInterval,omitempty"`
}

// Error is a problem at a line of a manifest.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Limits of a manifest. A YAML alias repeats its anchor's value wherever
// it appears, so a small file can decode to a huge one (nine nested
// anchors of ten aliases each are a billion values): what aliases add
// when decoded is bounded across the whole manifest, before anything is
// decoded, as is the file itself.
const (
	MaxBytes          = 16 << 20 // of one manifest file
	MaxAliasExpansion = 16 << 20 // decoded bytes aliases may add to a manifest
)

// Parse reads every document of a manifest; file names it in errors. Empty
// documents are skipped. Nothing is returned unless every document is
// valid.
func Parse(file string, r io.Reader) ([]Object, error) {
	src, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return nil, &Error{File: file, Msg: err.Error()}
	}
	if len(src) > MaxBytes {
		return nil, &Error{File: file, Msg: fmt.Sprintf("the manifest is larger than %d MiB: split it into several files", MaxBytes>>20)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var objs []Object
	seen := map[string]int{}
	aliases := &expansion{size: map[*yaml.Node]int64{}, open: map[*yaml.Node]bool{}}
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line, msg := yamlErr(err)
			return nil, &Error{File: file, Line: line, Msg: msg}
		}
		if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null") {
			continue
		}
		root := doc.Content[0]
		if err := aliases.add(root); err != nil {
			err.File = file
			return nil, err
		}
		// A document is an object, or a list of them (what `get
		// workloads -o yaml` prints).
		roots := []*yaml.Node{root}
		if root.Kind == yaml.SequenceNode {
			roots = root.Content
		}
		for _, root := range roots {
			o, err := parseObject(file, root)
			if err != nil {
				return nil, err
			}
			id := o.Kind + "/" + o.Metadata.Name
			if first, dup := seen[id]; dup {
				return nil, &Error{File: file, Line: root.Line, Msg: fmt.Sprintf("%s is defined twice (first at line %d)", id, first)}
			}
			seen[id] = root.Line
			objs = append(objs, o)
		}
	}
	return objs, nil
}

// parseObject decodes and checks one object.
func parseObject(file string, root *yaml.Node) (Object, error) {
	if root.Kind != yaml.MappingNode {
		return Object{}, &Error{File: file, Line: root.Line, Msg: "a document must be a mapping with apiVersion, kind, metadata and spec or data (or a list of them)"}
	}
	if kindOf(root) == KindNodeGroup {
		return parseNodeGroup(file, root)
	}
	if err := checkFields(root, reflect.TypeOf(Object{}), ""); err != nil {
		err.File = file
		return Object{}, err
	}
	var o Object
	if err := root.Decode(&o); err != nil {
		line, msg := yamlErr(err)
		return Object{}, &Error{File: file, Line: line, Msg: msg}
	}
	o.Line, o.File = root.Line, file
	if err := o.validate(); err != nil {
		return Object{}, &Error{File: file, Line: root.Line, Msg: err.Error()}
	}
	return o, nil
}

// kindOf is a document's kind, as written.
func kindOf(root *yaml.Node) string {
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "kind" {
			return root.Content[i+1].Value
		}
	}
	return ""
}

// parseNodeGroup decodes and checks a NodeGroup document.
func parseNodeGroup(file string, root *yaml.Node) (Object, error) {
	if err := checkFields(root, reflect.TypeOf(nodeGroupDoc{}), ""); err != nil {
		err.File = file
		return Object{}, err
	}
	var d nodeGroupDoc
	if err := root.Decode(&d); err != nil {
		line, msg := yamlErr(err)
		return Object{}, &Error{File: file, Line: line, Msg: msg}
	}
	o := Object{APIVersion: d.APIVersion, Kind: d.Kind, Metadata: d.Metadata, NodeGroup: d.Spec, Line: root.Line, File: file}
	if err := o.validate(); err != nil {
		return Object{}, &Error{File: file, Line: root.Line, Msg: err.Error()}
	}
	return o, nil
}

func (o Object) validate() error {
	if o.APIVersion != APIVersion {
		return fmt.Errorf("apiVersion %q is not supported: use %s", o.APIVersion, APIVersion)
	}
	if o.Metadata.Name == "" {
		return fmt.Errorf("%s has no metadata.name", o.Kind)
	}
	switch o.Kind {
	case KindWorkload:
		if o.Data != nil {
			return fmt.Errorf("a Workload has spec, not data")
		}
		if o.Spec == nil {
			return fmt.Errorf("workload %s has no spec", o.Metadata.Name)
		}
		if (o.Spec.Module == "") == (o.Spec.Image == "") {
			return fmt.Errorf("workload %s needs exactly one of spec.module and spec.image", o.Metadata.Name)
		}
		if r := o.Spec.Runtime; r != "" && r != "wasm" && r != "container" {
			return fmt.Errorf("workload %s: spec.runtime %q is not wasm or container", o.Metadata.Name, r)
		}
		if o.Spec.Runtime != "" && !IsDigest(o.Spec.Module) {
			return fmt.Errorf("workload %s: spec.runtime is for a module given by digest; a file says what it is", o.Metadata.Name)
		}
	case KindConfig, KindSecret:
		if o.Spec != nil {
			return fmt.Errorf("a %s has data, not spec", o.Kind)
		}
		if len(o.Metadata.Labels) > 0 {
			return fmt.Errorf("a %s has no labels: only workloads do", o.Kind)
		}
		if o.Status != nil {
			return fmt.Errorf("a %s has no status: only workloads do", o.Kind)
		}
	case KindNodeGroup:
		if o.NodeGroup == nil {
			return fmt.Errorf("node group %s has no spec", o.Metadata.Name)
		}
		if len(o.Metadata.Labels) > 0 {
			return fmt.Errorf("node group %s: the labels of its nodes go in spec.labels", o.Metadata.Name)
		}
		if o.NodeGroup.Provider == "" {
			return fmt.Errorf("node group %s has no spec.provider (provider: local)", o.Metadata.Name)
		}
	case "":
		return fmt.Errorf("the document has no kind: use Workload, Config, Secret or NodeGroup")
	default:
		return fmt.Errorf("kind %q is not known: use Workload, Config, Secret or NodeGroup", o.Kind)
	}
	return nil
}

// checkFields walks a mapping node against the struct type t (by yaml
// tags) and reports the first key t does not have, with its line. Maps
// take any key.
func checkFields(n *yaml.Node, t reflect.Type, path string) *Error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // a type error, which Decode reports with its line
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				return &Error{Line: k.Line, Msg: fmt.Sprintf("unknown field %q%s", path+k.Value, suggest(k.Value, fields))}
			}
			if err := checkFields(v, ft, path+k.Value+"."); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for _, item := range n.Content {
				if err := checkFields(item, t.Elem(), path); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// expansion adds up what aliases add to a manifest when it is decoded: a
// node's decoded size is its scalars' bytes plus nodeCost for each node,
// counting an alias's target again at each alias.
type expansion struct {
	size  map[*yaml.Node]int64 // decoded size of a node already measured
	open  map[*yaml.Node]bool  // nodes being measured: an alias to one is a cycle
	added int64                // by aliases so far, at most MaxAliasExpansion+1
}

// nodeCost is roughly what a decoded node costs beyond its bytes (a
// string or slice header), so that a million aliases of an empty string
// count.
const nodeCost = 16

// add measures one document and fails once the aliases of the manifest
// so far add more than MaxAliasExpansion.
func (e *expansion) add(root *yaml.Node) *Error {
	if err := e.measure(root); err != nil {
		return err
	}
	if e.added > MaxAliasExpansion {
		return &Error{Line: root.Line, Msg: fmt.Sprintf("its aliases expand the manifest by more than %d MiB when decoded: repeat the anchored values less", MaxAliasExpansion>>20)}
	}
	return nil
}

// measure returns n's decoded size (saturating past the limit, so that
// nested aliases cannot overflow it) and adds an alias's expansion to
// e.added.
func (e *expansion) measure(n *yaml.Node) *Error {
	if _, done := e.size[n]; done {
		return nil
	}
	if e.open[n] {
		return &Error{Line: n.Line, Msg: "an anchor's value contains an alias of itself"}
	}
	e.open[n] = true
	defer delete(e.open, n)
	total := int64(nodeCost + len(n.Value))
	for _, c := range n.Content {
		if err := e.measure(c); err != nil {
			return err
		}
		total = e.sum(total, e.size[c])
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		if err := e.measure(n.Alias); err != nil {
			return err
		}
		total = e.sum(total, e.size[n.Alias])
		e.added = e.sum(e.added, e.size[n.Alias])
	}
	e.size[n] = total
	return nil
}

func (e *expansion) sum(a, b int64) int64 { return min(a+b, MaxAliasExpansion+1) }

// suggest names a known field that differs from name only in case, the
// commonest typo.
func suggest(name string, fields map[string]reflect.Type) string {
	for f := range fields {
		if strings.EqualFold(f, name) {
			return fmt.Sprintf(" (did you mean %q?)", f)
		}
	}
	return ""
}

// yamlErr splits a yaml error into its first problem's line and message.
func yamlErr(err error) (int, string) {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.Join(strings.Fields(strings.TrimPrefix(msg, "yaml: ")), " ")
	var line int
	if i := strings.Index(msg, "line "); i >= 0 {
		if _, err := fmt.Sscanf(msg[i:], "line %d", &line); err == nil {
			if j := strings.Index(msg[i:], ": "); j >= 0 {
				msg = msg[:i] + msg[i+j+2:]
			}
		}
	}
	return line, msg
}
