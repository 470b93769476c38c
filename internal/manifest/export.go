package manifest

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A workload as the cluster holds it is written back as the manifest that
// would apply it unchanged (`get workloads -o yaml`): modules uploaded
// already are named by digest, sizes and durations in the units a person
// writes, and what the cluster reports goes under status, which apply
// ignores.

// EnvVar is one environment variable.
type EnvVar struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

// Env is a workload's environment: a mapping (applied in key order), or
// a sequence of name/value pairs (applied in that order), which is how a
// workload whose variables are not in key order is written back.
type Env []EnvVar

// UnmarshalYAML reads a mapping or a sequence.
func (e *Env) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.MappingNode:
		var m map[string]string
		if err := n.Decode(&m); err != nil {
			return err
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		*e = make(Env, len(keys))
		for i, k := range keys {
			(*e)[i] = EnvVar{Name: k, Value: m[k]}
		}
		return nil
	case yaml.SequenceNode:
		var vars []EnvVar
		if err := n.Decode(&vars); err != nil {
			return err
		}
		*e = vars
		return nil
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: env is a mapping NAME: VALUE or a list of name/value pairs", n.Line)}}
}

// MarshalYAML writes a mapping when the variables are in key order, else
// the sequence.
func (e Env) MarshalYAML() (any, error) {
	sorted := sort.SliceIsSorted(e, func(i, j int) bool { return e[i].Name < e[j].Name })
	for i := 1; sorted && i < len(e); i++ {
		sorted = e[i-1].Name != e[i].Name
	}
	if !sorted {
		return []EnvVar(e), nil
	}
	n := &yaml.Node{Kind: yaml.MappingNode}
	for _, v := range e {
		n.Content = append(n.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Value: v.Name},
			&yaml.Node{Kind: yaml.ScalarNode, Value: v.Value, Tag: "!!str"})
	}
	return n, nil
}

// WorkloadStatus is what the cluster reports of a workload.
type WorkloadStatus struct {
	Generation         int64     `yaml:"generation"`
	PromotedGeneration int64     `yaml:"promotedGeneration,omitempty"`
	Ready              int32     `yaml:"ready"`
	Current            int32     `yaml:"current"`
	Total              int32     `yaml:"total"`
	InFlight           int64     `yaml:"inFlight,omitempty"`
	Requests           int64     `yaml:"requests,omitempty"`
	ModuleSize         int64     `yaml:"moduleSize,omitempty"`
	CreatedAt          time.Time `yaml:"createdAt,omitempty"`
	UpdatedAt          time.Time `yaml:"updatedAt,omitempty"`
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// IsDigest reports whether s names an uploaded blob ("sha256:<64 hex>").
func IsDigest(s string) bool { return digestRE.MatchString(s) }

// FromWorkload is the manifest of a workload as the cluster holds it,
// with its status.
func FromWorkload(wv *v1.WorkloadView) Object {
	w, spec := wv.GetWorkload(), wv.GetWorkload().GetSpec()
	replicas := int(spec.GetReplicas())
	ws := &WorkloadSpec{
		Replicas:       &replicas,
		Args:           spec.GetArgs(),
		Configs:        spec.GetConfigs(),
		Secrets:        spec.GetSecrets(),
		ConfigFiles:    spec.GetConfigFiles(),
		SecretFiles:    spec.GetSecretFiles(),
		Memory:         FormatBytes(spec.GetMemoryBytes()),
		Scratch:        FormatBytes(spec.GetScratchBytes()),
		Volumes:        volumeFlags(spec.GetVolumes()),
		Mounts:         mountFlags(spec.GetMounts()),
		Restart:        restartName(spec.GetRestart()),
		Spread:         spec.GetPlacement().GetSpread(),
		Selector:       spec.GetPlacement().GetSelector(),
		Arch:           spec.GetPlacement().GetArch(),
		OS:             spec.GetPlacement().GetOs(),
		Port:           int(spec.GetPort()),
		TCP:            spec.GetTcp(),
		MaxSurge:       spec.GetMaxSurge(),
		MaxUnavailable: spec.GetMaxUnavailable(),
		Canary:         spec.GetCanary(),
		CanaryDuration: time.Duration(spec.GetCanaryDurationMs()) * time.Millisecond,
	}
	switch {
	case spec.GetImage() != "":
		ws.Image = spec.GetImage()
	case spec.GetSourceReference() != "":
		// registry: applied again, the reference resolves again (a tag
		// moved since is the next deploy).
		ws.Module = spec.GetSourceReference()
	case spec.GetKind() == "container":
		ws.Module, ws.Runtime = spec.GetModuleDigest(), "container"
	default:
		ws.Module = spec.GetModuleDigest()
	}
	if spec.GetCpuMillis() > 0 {
		ws.CPU = strconv.FormatInt(spec.GetCpuMillis(), 10) + "m"
	}
	switch {
	case spec.GetFallbackImage() != "":
		ws.FallbackImage = spec.GetFallbackImage()
	case spec.GetFallbackArchiveDigest() != "":
		ws.FallbackImage = spec.GetFallbackArchiveDigest()
	}
	for _, e := range spec.GetEnv() {
		ws.Env = append(ws.Env, EnvVar{Name: e.GetName(), Value: e.GetValue()})
	}
	if t := spec.GetHttp(); t != nil {
		as := spec.GetAutoscale()
		ws.HTTP = &HTTP{
			Route: t.GetRoute(), Host: t.GetHost(),
			Timeout:           time.Duration(t.GetTimeoutMs()) * time.Millisecond,
			MaxBody:           FormatBytes(t.GetMaxBodyBytes()),
			Concurrency:       int(t.GetConcurrency()),
			Queue:             int(t.GetQueue()),
			MinReplicas:       int(as.GetMinReplicas()),
			MaxReplicas:       int(as.GetMaxReplicas()),
			TargetConcurrency: int(as.GetTargetConcurrency()),
			Idle:              time.Duration(as.GetIdleMs()) * time.Millisecond,
			HealthPath:        t.GetHealthPath(),
			HealthInterval:    time.Duration(t.GetHealthIntervalMs()) * time.Millisecond,
		}
	}
	return Object{
		APIVersion: APIVersion,
		Kind:       KindWorkload,
		Metadata:   Metadata{Name: w.GetName(), Labels: w.GetLabels()},
		Spec:       ws,
		Status: &WorkloadStatus{
			Generation: w.GetGeneration(), PromotedGeneration: w.GetPromotedGeneration(),
			Ready: wv.GetReady(), Current: wv.GetCurrent(), Total: wv.GetTotal(),
			InFlight: wv.GetInFlight(), Requests: wv.GetRequests(), ModuleSize: spec.GetModuleSize(),
			CreatedAt: unixNano(w.GetCreatedUnixNano()), UpdatedAt: unixNano(w.GetUpdatedUnixNano()),
		},
	}
}

// Marshal writes objects as one YAML document each.
func Marshal(objs ...Object) ([]byte, error) {
	var b bytes.Buffer
	for i, o := range objs {
		if i > 0 {
			b.WriteString("---\n")
		}
		enc := yaml.NewEncoder(&b)
		enc.SetIndent(2)
		if err := enc.Encode(o); err != nil {
			return nil, err
		}
		if err := enc.Close(); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// FormatBytes writes a size in the largest binary unit that holds it
// exactly (64Mi, 1536Ki), as the memory and maxBody fields take it; "" for
// zero (the default).
func FormatBytes(n int64) string {
	switch {
	case n == 0:
		return ""
	case n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "Gi"
	case n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "Mi"
	case n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "Ki"
	}
	return strconv.FormatInt(n, 10)
}

func restartName(p v1.RestartPolicy) string {
	switch p {
	case v1.RestartPolicy_RESTART_POLICY_ON_FAILURE:
		return "on-failure"
	case v1.RestartPolicy_RESTART_POLICY_NEVER:
		return "never"
	}
	return "always"
}

func unixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// volumeFlags writes volume mounts as deploy --volume and volumes: take
// them, NAME:/PATH.
func volumeFlags(vols []*v1.VolumeMount) []string {
	var out []string
	for _, v := range vols {
		f := v.GetName() + ":" + v.GetPath()
		if v.GetPerInstance() {
			f += ",per-instance"
		}
		out = append(out, f)
	}
	return out
}

// mountFlags writes host mounts as deploy --mount and mounts: take them,
// HOST:/PATH[:ro].
func mountFlags(mounts []*v1.HostMount) []string {
	var out []string
	for _, m := range mounts {
		f := m.GetHostPath() + ":" + m.GetPath()
		if m.GetReadOnly() {
			f += ":ro"
		}
		out = append(out, f)
	}
	return out
}
