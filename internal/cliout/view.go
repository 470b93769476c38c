// Package cliout is how the wasmorch CLI shows things: plain view structs
// built from the API's records (their JSON names are part of the CLI's
// contract, so they are spelled here and never come from protojson), the
// table, JSON and YAML printers over them, and the progress line that
// deploy updates while it waits.
package cliout

import (
	"sort"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Workload is one workload as `get workloads` shows it.
type Workload struct {
	Name        string    `json:"name"`
	Kind        string    `json:"kind"`
	Replicas    int32     `json:"replicas"`
	Ready       int32     `json:"ready"`
	Current     int32     `json:"current"` // instances of the current generation
	Total       int32     `json:"total"`   // instances of any generation
	Generation  int64     `json:"generation"`
	Digest      string    `json:"digest,omitempty"`
	Size        int64     `json:"size,omitempty"`
	MemoryBytes int64     `json:"memoryBytes,omitempty"`
	Restart     string    `json:"restart"`
	Env         []EnvVar  `json:"env,omitempty"`
	Args        []string  `json:"args,omitempty"`
	CreatedAt   time.Time `json:"createdAt,omitzero"`
	UpdatedAt   time.Time `json:"updatedAt,omitzero"`
	// Route is an HTTP function's route ("/greet", "host/greet").
	Route string `json:"route,omitempty"`
	// MinReplicas and MaxReplicas bound an autoscaled function's replicas.
	MinReplicas *int32 `json:"minReplicas,omitempty"`
	MaxReplicas *int32 `json:"maxReplicas,omitempty"`
	// InFlight is an HTTP function's requests in flight, summed over the
	// gateways' latest load reports.
	InFlight *int64 `json:"inFlight,omitempty"`
	// Canary is a function's canary percentage, PromotedGeneration the
	// newest generation promoted past its canary (rollouts).
	Canary             string `json:"canary,omitempty"`
	PromotedGeneration int64  `json:"promotedGeneration,omitempty"`
	// Labels are the workload's labels (observe).
	Labels map[string]string `json:"labels,omitempty"`
	// The rest of the spec, as the API returns it.
	Image          string            `json:"image,omitempty"`
	FallbackImage  string            `json:"fallbackImage,omitempty"` // a reference, or an uploaded archive's digest
	Port           int32             `json:"port,omitempty"`
	TCP            bool              `json:"tcp,omitempty"` // a plain TCP service: Port is its nodes' own port
	CPUMillis      int64             `json:"cpuMillis,omitempty"`
	NodeSelector   map[string]string `json:"nodeSelector,omitempty"`
	Spread         string            `json:"spread,omitempty"`
	Configs        []string          `json:"configs,omitempty"`
	Secrets        []string          `json:"secrets,omitempty"`
	ConfigFiles    []string          `json:"configFiles,omitempty"`
	SecretFiles    []string          `json:"secretFiles,omitempty"`
	HealthPath     string            `json:"healthPath,omitempty"`
	MaxSurge       string            `json:"maxSurge,omitempty"`
	MaxUnavailable string            `json:"maxUnavailable,omitempty"`
	// Requests is an HTTP function's requests answered, summed over the
	// gateways' latest load reports (its rate is the request rate).
	Requests *int64 `json:"requests,omitempty"`

	// record is the workload as the API returned it, for what the view
	// leaves out (its manifest).
	record *wasmorchv1.WorkloadView
}

// view is the workload as the API returned it (a bare one for a view
// built by hand).
func (x Workload) view() *wasmorchv1.WorkloadView {
	if x.record != nil {
		return x.record
	}
	return &wasmorchv1.WorkloadView{Workload: &wasmorchv1.Workload{Name: x.Name, Generation: x.Generation, Labels: x.Labels,
		Spec: &wasmorchv1.WorkloadSpec{Kind: x.Kind, ModuleDigest: x.Digest, Replicas: x.Replicas, MemoryBytes: x.MemoryBytes}},
		Ready: x.Ready, Current: x.Current, Total: x.Total}
}

// EnvVar is one environment variable of a workload.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Instance is one instance as `get instances` shows it.
type Instance struct {
	ID         string    `json:"id"`
	Workload   string    `json:"workload"`
	Generation int64     `json:"generation"`
	Node       string    `json:"node"`
	State      string    `json:"state"`
	Restarts   int32     `json:"restarts"`
	Runtime    string    `json:"runtime,omitempty"`  // wasm or container: what runs it, or will
	ExitCode   *int32    `json:"exitCode,omitempty"` // set once it has exited
	Reason     string    `json:"reason,omitempty"`
	Message    string    `json:"message,omitempty"`
	CreatedAt  time.Time `json:"createdAt,omitzero"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`

	// RuntimeReason says why a wasm workload's instance runs as its
	// fallback container.
	RuntimeReason string `json:"runtimeReason,omitempty"`
}

// Node is one node as `get nodes` shows it.
type Node struct {
	Name         string            `json:"name"`
	State        string            `json:"state"` // Ready or NotReady
	Address      string            `json:"address,omitempty"`
	Arch         string            `json:"arch,omitempty"`
	OS           string            `json:"os,omitempty"`
	Runtimes     []string          `json:"runtimes"`
	Labels       map[string]string `json:"labels,omitempty"`
	Instances    int32             `json:"instances"`
	Cordoned     bool              `json:"cordoned"`
	Draining     bool              `json:"draining,omitempty"`
	Version      string            `json:"version,omitempty"`
	Capacity     *Resources        `json:"capacity,omitempty"`
	Allocated    *Resources        `json:"allocated,omitempty"`
	RegisteredAt time.Time         `json:"registeredAt,omitzero"`
	// Conditions are what its worker reports wrong with it: DiskPressure
	// (no new instances are placed there).
	Conditions []NodeCondition `json:"conditions,omitempty"`
}

// NodeCondition is one condition that holds on a node.
type NodeCondition struct {
	Type    string    `json:"type"` // DiskPressure
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since,omitzero"`
}

// Resources is a node's capacity or what its instances hold of it.
type Resources struct {
	MemoryBytes int64 `json:"memoryBytes"`
	CPUMillis   int64 `json:"cpuMillis"`
	Instances   int32 `json:"instances"`
}

// Node states.
const (
	NodeReady    = "Ready"
	NodeNotReady = "NotReady"
)

// RestartPolicies are the policies a user can choose, in the order help
// lists them.
var RestartPolicies = []wasmorchv1.RestartPolicy{
	wasmorchv1.RestartPolicy_RESTART_POLICY_ALWAYS,
	wasmorchv1.RestartPolicy_RESTART_POLICY_ON_FAILURE,
	wasmorchv1.RestartPolicy_RESTART_POLICY_NEVER,
}

// RestartName is the CLI's spelling of a restart policy: always,
// on-failure or never. Unspecified is always, as the API treats it.
func RestartName(p wasmorchv1.RestartPolicy) string {
	switch p {
	case wasmorchv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED, wasmorchv1.RestartPolicy_RESTART_POLICY_ALWAYS:
		return "always"
	case wasmorchv1.RestartPolicy_RESTART_POLICY_ON_FAILURE:
		return "on-failure"
	case wasmorchv1.RestartPolicy_RESTART_POLICY_NEVER:
		return "never"
	}
	return p.String()
}

// StateName is an instance state's CamelCase name: INSTANCE_STATE_RUNNING
// is "Running". Unspecified is "Unknown".
func StateName(s wasmorchv1.InstanceState) string {
	if s == wasmorchv1.InstanceState_INSTANCE_STATE_UNSPECIFIED {
		return "Unknown"
	}
	words := strings.Split(strings.TrimPrefix(s.String(), "INSTANCE_STATE_"), "_")
	for i, w := range words {
		words[i] = w[:1] + strings.ToLower(w[1:])
	}
	return strings.Join(words, "")
}

// EffectiveState is an instance's state as users see it: the control
// plane's effective state, else the worker's last report, else Pending
// when it has no node and Scheduled when it has one.
func EffectiveState(v *wasmorchv1.InstanceView) wasmorchv1.InstanceState {
	if s := v.GetState(); s != wasmorchv1.InstanceState_INSTANCE_STATE_UNSPECIFIED {
		return s
	}
	if s := v.GetStatus().GetState(); s != wasmorchv1.InstanceState_INSTANCE_STATE_UNSPECIFIED {
		return s
	}
	if v.GetInstance().GetNode() == "" {
		return wasmorchv1.InstanceState_INSTANCE_STATE_PENDING
	}
	return wasmorchv1.InstanceState_INSTANCE_STATE_SCHEDULED
}

// WorkloadFrom builds the view of one workload.
func WorkloadFrom(v *wasmorchv1.WorkloadView) Workload {
	w, spec := v.GetWorkload(), v.GetWorkload().GetSpec()
	out := Workload{
		Name:        w.GetName(),
		Kind:        spec.GetKind(),
		Replicas:    spec.GetReplicas(),
		Ready:       v.GetReady(),
		Current:     v.GetCurrent(),
		Total:       v.GetTotal(),
		Generation:  w.GetGeneration(),
		Digest:      spec.GetModuleDigest(),
		Size:        spec.GetModuleSize(),
		MemoryBytes: spec.GetMemoryBytes(),
		Restart:     RestartName(spec.GetRestart()),
		Args:        spec.GetArgs(),
		CreatedAt:   unixNano(w.GetCreatedUnixNano()),
		UpdatedAt:   unixNano(w.GetUpdatedUnixNano()),
		Labels:      w.GetLabels(),
		record:      v,

		Image:          spec.GetImage(),
		FallbackImage:  spec.GetFallbackImage() + spec.GetFallbackArchiveDigest(),
		Port:           spec.GetPort(),
		TCP:            spec.GetTcp(),
		CPUMillis:      spec.GetCpuMillis(),
		NodeSelector:   spec.GetPlacement().GetSelector(),
		Spread:         spec.GetPlacement().GetSpread(),
		Configs:        spec.GetConfigs(),
		Secrets:        spec.GetSecrets(),
		ConfigFiles:    spec.GetConfigFiles(),
		SecretFiles:    spec.GetSecretFiles(),
		HealthPath:     spec.GetHttp().GetHealthPath(),
		MaxSurge:       spec.GetMaxSurge(),
		MaxUnavailable: spec.GetMaxUnavailable(),
	}
	if spec.GetHttp() != nil {
		out.Route = httptrigger.Describe(spec.GetHttp())
		n, r := v.GetInFlight(), v.GetRequests()
		out.InFlight, out.Requests = &n, &r
	}
	if spec.GetCanary() != "" {
		out.Canary, out.PromotedGeneration = spec.GetCanary(), w.GetPromotedGeneration()
	}
	if as := spec.GetAutoscale(); as.GetMaxReplicas() > 0 {
		lo, hi := as.GetMinReplicas(), as.GetMaxReplicas()
		out.MinReplicas, out.MaxReplicas = &lo, &hi
	}
	for _, e := range spec.GetEnv() {
		out.Env = append(out.Env, EnvVar{Name: e.GetName(), Value: e.GetValue()})
	}
	return out
}

// InstanceFrom builds the view of one instance.
func InstanceFrom(v *wasmorchv1.InstanceView) Instance {
	in, st := v.GetInstance(), v.GetStatus()
	out := Instance{
		ID:         in.GetId(),
		Workload:   in.GetWorkload(),
		Generation: in.GetGeneration(),
		Node:       in.GetNode(),
		State:      StateName(EffectiveState(v)),
		Restarts:   st.GetRestarts(),
		Runtime:    instanceRuntime(in, st),
		Reason:     st.GetReason(),
		Message:    st.GetMessage(),
		CreatedAt:  unixNano(in.GetCreatedUnixNano()),
		StartedAt:  unixNano(st.GetStartedUnixNano()),
		FinishedAt: unixNano(st.GetFinishedUnixNano()),

		RuntimeReason: in.GetRuntimeReason(),
	}
	if out.Node == "" {
		out.Node = st.GetNode()
	}
	if st.GetExited() {
		code := st.GetExitCode()
		out.ExitCode = &code
	}
	if out.Reason == "" && in.GetPendingReason() != "" {
		out.Reason = "Unschedulable"
		out.Message = in.GetPendingReason()
	}
	if out.State == StateName(wasmorchv1.InstanceState_INSTANCE_STATE_LOST) {
		out.Reason = "NodeLost"
		out.Message = "node " + out.Node + " stopped answering"
		if in.GetLostUnixNano() != 0 {
			out.Message += "; replaced"
		}
	}
	return out
}

// NodeFrom builds the view of one node.
func NodeFrom(v *wasmorchv1.NodeView) Node {
	n := v.GetNode()
	out := Node{
		Name:         n.GetName(),
		State:        NodeNotReady,
		Address:      n.GetAddress(),
		Arch:         n.GetArch(),
		OS:           n.GetOs(),
		Runtimes:     append([]string{}, n.GetRuntimes()...),
		Labels:       n.GetLabels(),
		Instances:    v.GetInstances(),
		Cordoned:     n.GetCordoned(),
		Draining:     n.GetDraining(),
		Version:      n.GetVersion(),
		Capacity:     resourcesFrom(n.GetCapacity()),
		Allocated:    resourcesFrom(v.GetAllocated()),
		RegisteredAt: unixNano(n.GetRegisteredUnixNano()),
	}
	if v.GetReady() {
		out.State = NodeReady
	}
	for _, c := range n.GetConditions() {
		out.Conditions = append(out.Conditions, NodeCondition{Type: ConditionName(c.GetType()), Message: c.GetMessage(), Since: unixNano(c.GetSinceUnixNano())})
	}
	return out
}

// ConditionName is a node condition's CamelCase name:
// NODE_CONDITION_TYPE_DISK_PRESSURE is "DiskPressure".
func ConditionName(t wasmorchv1.NodeConditionType) string {
	var b strings.Builder
	for _, w := range strings.Split(strings.TrimPrefix(t.String(), "NODE_CONDITION_TYPE_"), "_") {
		if w != "" {
			b.WriteString(w[:1] + strings.ToLower(w[1:]))
		}
	}
	return b.String()
}

// Workloads, Instances and Nodes build sorted views of a list; never nil,
// so that an empty list prints as [].
func Workloads(vs []*wasmorchv1.WorkloadView) []Workload {
	out := make([]Workload, 0, len(vs))
	for _, v := range vs {
		out = append(out, WorkloadFrom(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func Instances(vs []*wasmorchv1.InstanceView) []Instance {
	out := make([]Instance, 0, len(vs))
	for _, v := range vs {
		out = append(out, InstanceFrom(v))
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Workload != b.Workload {
			return a.Workload < b.Workload
		}
		if a.Generation != b.Generation {
			return a.Generation > b.Generation
		}
		return a.ID < b.ID
	})
	return out
}

func Nodes(vs []*wasmorchv1.NodeView) []Node {
	out := make([]Node, 0, len(vs))
	for _, v := range vs {
		out = append(out, NodeFrom(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func resourcesFrom(r *wasmorchv1.Resources) *Resources {
	if r == nil {
		return nil
	}
	return &Resources{MemoryBytes: r.GetMemoryBytes(), CPUMillis: r.GetCpuMillis(), Instances: r.GetInstances()}
}

func unixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// instanceRuntime is the runtime its node reported running the instance
// with, or, before any report, the runtime its workload's kind asks for.
func instanceRuntime(in *wasmorchv1.Instance, st *wasmorchv1.InstanceStatus) string {
	if r := st.GetRuntime(); r != "" {
		return r
	}
	if r := in.GetRuntime(); r != "" {
		return r
	}
	if k := in.GetSpec().GetKind(); k != "" {
		return k
	}
	return "wasm"
}
