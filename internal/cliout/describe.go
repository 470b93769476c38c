package cliout

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Event is one recorded event as describe and `get events` show it.
type Event struct {
	Time time.Time `json:"time"`
	// Object is what it is about: "workload/NAME", "node/NAME".
	Object  string `json:"object,omitempty"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Source  string `json:"source,omitempty"`
}

// EventFrom builds the view of one event.
func EventFrom(e *wasmorchv1.Event) Event {
	return Event{Time: unixNano(e.GetUnixNano()), Object: e.GetObject(), Reason: e.GetReason(), Message: e.GetMessage(), Source: e.GetSource()}
}

// WorkloadDescription is what `describe workload` shows.
type WorkloadDescription struct {
	Workload  Workload   `json:"workload"`
	Selector  string     `json:"selector,omitempty"`
	Spread    string     `json:"spread,omitempty"`
	CPUMillis int64      `json:"cpuMillis,omitempty"`
	Instances []Instance `json:"instances"`
	Events    []Event    `json:"events"`
	// Health is a function's health check: "GET /greet/healthz every 2s".
	Health string `json:"health,omitempty"`

	// canary.go: a function's canary setting, and what its canary does
	// while a generation waits for promotion.
	Canary      string `json:"canary,omitempty"`
	CanaryPhase string `json:"canaryPhase,omitempty"`

	// edge: the nodes the current generation could not run on, which the
	// scheduler keeps it off until each one's Until.
	UnfitNodes []UnfitNode `json:"unfitNodes,omitempty"`
}

// UnfitNode is a node a workload's generation could not run on.
type UnfitNode struct {
	Node     string    `json:"node"`
	Reason   string    `json:"reason"`
	Message  string    `json:"message"`
	Instance string    `json:"instance"`
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
}

// unfitNodes are the entries of wl that hold for its generation at now.
func unfitNodes(wl *wasmorchv1.Workload, now time.Time) []UnfitNode {
	var out []UnfitNode
	for _, u := range wl.GetUnfitNodes() {
		if u.GetGeneration() != wl.GetGeneration() || now.UnixNano() >= u.GetUntilUnixNano() {
			continue
		}
		out = append(out, UnfitNode{Node: u.GetNode(), Reason: u.GetReason(), Message: u.GetMessage(), Instance: u.GetInstance(),
			Since: unixNano(u.GetUnixNano()), Until: unixNano(u.GetUntilUnixNano())})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// NodeDescription is what `describe node` shows.
type NodeDescription struct {
	Node      Node       `json:"node"`
	Instances []Instance `json:"instances"`
	Events    []Event    `json:"events"`
}

// DescribeWorkload builds a workload's description.
func DescribeWorkload(wv *wasmorchv1.WorkloadView, insts []*wasmorchv1.InstanceView, evs []*wasmorchv1.Event) WorkloadDescription {
	spec := wv.GetWorkload().GetSpec()
	return WorkloadDescription{
		Workload:  WorkloadFrom(wv),
		Selector:  FormatLabels(spec.GetPlacement().GetSelector()),
		Spread:    spec.GetPlacement().GetSpread(),
		CPUMillis: spec.GetCpuMillis(),
		Instances: Instances(insts),
		Events:    Events(evs),
		Health:    healthCheck(spec),

		Canary:      canarySetting(spec),
		CanaryPhase: canaryPhase(wv.GetWorkload(), insts),
		UnfitNodes:  unfitNodes(wv.GetWorkload(), time.Now()),
	}
}

// DescribeNode builds a node's description.
func DescribeNode(nv *wasmorchv1.NodeView, insts []*wasmorchv1.InstanceView, evs []*wasmorchv1.Event) NodeDescription {
	return NodeDescription{Node: NodeFrom(nv), Instances: Instances(insts), Events: Events(evs)}
}

// Events builds the views of events, oldest first.
func Events(evs []*wasmorchv1.Event) []Event {
	out := make([]Event, 0, len(evs))
	for _, e := range evs {
		out = append(out, EventFrom(e))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// FormatLabels writes labels as k=v,k=v in key order; "" when there are none.
func FormatLabels(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + l[k]
	}
	return strings.Join(keys, ",")
}

// DescribeWorkload prints a workload's description.
func (p Printer) DescribeWorkload(w io.Writer, d WorkloadDescription) error {
	if p.Format != Table {
		return p.encode(w, d)
	}
	x := d.Workload
	wl := x.view().GetWorkload()
	spec := wl.GetSpec()
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	field := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	field("Name", x.Name)
	field("Labels", dash(FormatLabels(x.Labels)))
	field("Kind", dash(x.Kind))
	field("Generation", fmt.Sprint(x.Generation))
	field("Replicas", fmt.Sprintf("%d desired, %d ready, %d current, %d total", x.Replicas, x.Ready, x.Current, x.Total))
	switch {
	case spec.GetImage() != "":
		field("Image", spec.GetImage())
	default:
		field("Module", fmt.Sprintf("%s (%s)", dash(x.Digest), HumanBytes(x.Size)))
	}
	if ref := spec.GetSourceReference(); ref != "" { // registry
		field("Source", ref+" ("+spec.GetSourceDigest()+")")
	}
	if fb := spec.GetFallbackImage() + spec.GetFallbackArchiveDigest(); fb != "" {
		field("Fallback image", fb)
	}
	field("Restart", x.Restart)
	mem := "128Mi (the default)"
	if x.MemoryBytes > 0 {
		mem = HumanBytes(x.MemoryBytes)
	}
	field("Memory limit", mem)
	if d.CPUMillis > 0 {
		field("CPU request", fmt.Sprintf("%dm", d.CPUMillis))
	}
	field("Selector", dash(d.Selector))
	field("Spread", dash(d.Spread))
	if pl := spec.GetPlacement(); len(pl.GetArch())+len(pl.GetOs()) > 0 {
		field("Platforms", dash(strings.Join(pl.GetOs(), ","))+"/"+dash(strings.Join(pl.GetArch(), ",")))
	}
	if x.Route != "" {
		field("Route", x.Route)
		field("Requests", functionLimits(spec))
		if spec.GetPort() != 0 {
			field("Port", fmt.Sprint(spec.GetPort()))
		}
	}
	if spec.GetTcp() {
		field("Port", fmt.Sprintf("%d/TCP on its node (plain TCP: one instance per node)", spec.GetPort()))
	}
	if as := spec.GetAutoscale(); as.GetMaxReplicas() > 0 {
		field("Autoscale", autoscaleSetting(as))
	}
	if d.Health != "" {
		field("Health check", d.Health)
	}
	if len(x.Args) > 0 {
		field("Args", strings.Join(x.Args, " "))
	}
	for _, e := range x.Env {
		field("Env", e.Name+"="+e.Value)
	}
	for _, ref := range []struct {
		name  string
		items []string
	}{
		{"Configs (env)", spec.GetConfigs()}, {"Secrets (env)", spec.GetSecrets()},
		{"Config files", prefixed("/config/", spec.GetConfigFiles())}, {"Secret files", prefixed("/secrets/", spec.GetSecretFiles())},
	} {
		if len(ref.items) > 0 {
			field(ref.name, strings.Join(ref.items, ", "))
		}
	}
	if spec.GetTcp() {
		// services: a plain TCP service never surges (workloads.RolloutBounds).
		field("Rolling update", fmt.Sprintf("in place (plain TCP: no surge), max unavailable %s, at least 1", orDefault(spec.GetMaxUnavailable(), "25%")))
	} else {
		field("Rolling update", fmt.Sprintf("max surge %s, max unavailable %s", orDefault(spec.GetMaxSurge(), "25%"), orDefault(spec.GetMaxUnavailable(), "25%")))
	}
	if d.Canary != "" {
		field("Canary", d.Canary)
	}
	if d.CanaryPhase != "" {
		field("Rollout", d.CanaryPhase)
	}
	for _, u := range d.UnfitNodes { // edge
		field("Unfit node", fmt.Sprintf("%s: %s (%s), avoided until %s", u.Node, u.Reason, u.Message, u.Until.UTC().Format(time.RFC3339)))
	}
	if !x.CreatedAt.IsZero() {
		field("Created", x.CreatedAt.Format(time.RFC3339)+" ("+Age(p.Now, x.CreatedAt)+" ago)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return p.describeTail(w, d.Instances, d.Events)
}

// healthCheck describes a function's health check, "" without one.
func healthCheck(spec *wasmorchv1.WorkloadSpec) string {
	set := httptrigger.Effective(spec.GetHttp())
	if set.HealthPath == "" {
		return ""
	}
	return fmt.Sprintf("GET %s every %s (unhealthy after %d failures in a row)", set.HealthPath, set.HealthInterval, httptrigger.HealthFailureThreshold)
}

// DescribeNode prints a node's description.
func (p Printer) DescribeNode(w io.Writer, d NodeDescription) error {
	if p.Format != Table {
		return p.encode(w, d)
	}
	x := d.Node
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	field := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	field("Name", x.Name)
	field("State", nodeState(x))
	for _, c := range x.Conditions {
		field(c.Type, fmt.Sprintf("%s (for %s)", c.Message, Age(p.Now, c.Since)))
	}
	field("Address", dash(x.Address))
	field("Arch/OS", dash(x.Arch)+"/"+dash(x.OS))
	field("Runtimes", dash(strings.Join(x.Runtimes, ",")))
	field("Labels", dash(FormatLabels(x.Labels)))
	if c, a := x.Capacity, x.Allocated; c != nil && a != nil {
		field("Instances", fmt.Sprintf("%d of %d slots", a.Instances, c.Instances))
		field("Memory", fmt.Sprintf("%s of %s reserved", HumanBytes(a.MemoryBytes), HumanBytes(c.MemoryBytes)))
		field("CPU", fmt.Sprintf("%dm of %dm reserved", a.CPUMillis, c.CPUMillis))
	}
	field("Version", dash(x.Version))
	if err := tw.Flush(); err != nil {
		return err
	}
	return p.describeTail(w, d.Instances, d.Events)
}

func (p Printer) describeTail(w io.Writer, insts []Instance, evs []Event) error {
	var b strings.Builder
	b.WriteString("\nInstances:\n")
	if len(insts) == 0 {
		b.WriteString("(none)\n")
	} else if err := p.Instances(&b, insts); err != nil {
		return err
	}
	b.WriteString("\nEvents:\n")
	if len(evs) == 0 {
		b.WriteString("(none)\n")
	} else {
		rows := [][]string{{"AGE", "REASON", "MESSAGE"}}
		for _, e := range evs {
			rows = append(rows, []string{Age(p.Now, e.Time), e.Reason, e.Message})
		}
		if err := writeTable(&b, rows); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// nodeState is a node's state with its conditions and scheduling flags:
// Ready, Ready,DiskPressure, Ready,Cordoned or Ready,Draining.
func nodeState(x Node) string {
	state := x.State
	for _, c := range x.Conditions {
		state += "," + c.Type
	}
	switch {
	case x.Draining:
		return state + ",Draining"
	case x.Cordoned:
		return state + ",Cordoned"
	}
	return state
}

// HumanBytes writes a size in binary units, exactly when it is a whole
// number of them (64Mi), else to one decimal (1.5Mi); plain bytes under
// 1Ki.
func HumanBytes(n int64) string {
	units := []struct {
		size int64
		name string
	}{{1 << 30, "Gi"}, {1 << 20, "Mi"}, {1 << 10, "Ki"}}
	for _, u := range units {
		if n >= u.size {
			if n%u.size == 0 {
				return fmt.Sprintf("%d%s", n/u.size, u.name)
			}
			return fmt.Sprintf("%.1f%s", float64(n)/float64(u.size), u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}

// functionLimits describes a function's per-request settings, defaults
// named as such.
func functionLimits(spec *wasmorchv1.WorkloadSpec) string {
	t := spec.GetHttp()
	timeout := "30s (default)"
	if t.GetTimeoutMs() > 0 {
		timeout = (time.Duration(t.GetTimeoutMs()) * time.Millisecond).String()
	}
	body := "10Mi (default)"
	if t.GetMaxBodyBytes() > 0 {
		body = HumanBytes(t.GetMaxBodyBytes())
	}
	conc, queue := "100 (default)", "100 (default)"
	if t.GetConcurrency() > 0 {
		conc = fmt.Sprint(t.GetConcurrency())
	}
	if t.GetQueue() > 0 {
		queue = fmt.Sprint(t.GetQueue())
	}
	return fmt.Sprintf("timeout %s, body up to %s, %s at once per replica, %s queued", timeout, body, conc, queue)
}

// autoscaleSetting describes an autoscaled function's bounds.
func autoscaleSetting(as *wasmorchv1.Autoscale) string {
	target := "10 (default)"
	if as.GetTargetConcurrency() > 0 {
		target = fmt.Sprint(as.GetTargetConcurrency())
	}
	idle := "5m0s (default)"
	if as.GetIdleMs() > 0 {
		idle = (time.Duration(as.GetIdleMs()) * time.Millisecond).String()
	}
	return fmt.Sprintf("%d..%d replicas, %s requests in flight per replica, down to the minimum after %s idle", as.GetMinReplicas(), as.GetMaxReplicas(), target, idle)
}

func prefixed(prefix string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n + " (" + prefix + n + "/)"
	}
	return out
}

func orDefault(s, def string) string {
	if s == "" {
		return def + " (default)"
	}
	return s
}
