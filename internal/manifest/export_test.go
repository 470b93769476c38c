package manifest

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// fullSpec sets every field a user can set, with values that are not the
// defaults.
func fullWorkload() *v1.WorkloadView {
	return &v1.WorkloadView{
		Workload: &v1.Workload{
			Name: "web", Generation: 4, PromotedGeneration: 3, Labels: map[string]string{"app": "web", "tier": "front"},
			Spec: &v1.WorkloadSpec{
				Kind: "wasm", ModuleDigest: digest, ModuleSize: 1234, Replicas: 3,
				Env:         []*v1.EnvVar{{Name: "Z", Value: "last"}, {Name: "A", Value: "first"}},
				Args:        []string{"--verbose", "x"},
				MemoryBytes: 64 << 20, Restart: v1.RestartPolicy_RESTART_POLICY_ON_FAILURE, CpuMillis: 250,
				Http: &v1.HttpTrigger{Route: "/web", Host: "example.com", TimeoutMs: 5000, MaxBodyBytes: 1536 << 10,
					Concurrency: 7, Queue: 9, HealthPath: "/healthz", HealthIntervalMs: 1500},
				Autoscale:        &v1.Autoscale{MinReplicas: 1, MaxReplicas: 5, TargetConcurrency: 3, IdleMs: 60000},
				Placement:        &v1.Placement{Selector: map[string]string{"zone": "a"}, Spread: "rack", Arch: []string{"amd64"}, Os: []string{"linux"}},
				FallbackImage:    "docker.io/library/web:1",
				Port:             8081,
				Configs:          []string{"cfg"},
				Secrets:          []string{"sec"},
				ConfigFiles:      []string{"files"},
				SecretFiles:      []string{"keys"},
				MaxSurge:         "2",
				MaxUnavailable:   "10%",
				Canary:           "20%",
				CanaryDurationMs: 30000,
			},
		},
		Ready: 3, Current: 3, Total: 4,
	}
}

func TestAWorkloadWrittenBackParsesToTheSameSettings(t *testing.T) {
	b, err := Marshal(FromWorkload(fullWorkload()))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"memory: 64Mi", "maxBody: 1536Ki", "cpu: 250m", "timeout: 5s", "canaryDuration: 30s", "module: " + digest, "status:"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("manifest lacks %q:\n%s", want, b)
		}
	}
	objs, err := Parse("out.yaml", strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("the written manifest does not parse: %v\n%s", err, b)
	}
	if len(objs) != 1 {
		t.Fatalf("%d objects", len(objs))
	}
	back := FromWorkload(fullWorkload())
	got, want := objs[0], back
	got.Line, got.File, got.Status, want.Status = 0, "", nil, nil
	gb, _ := Marshal(got)
	wb, _ := Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("parsed back differs:\n%s\nwant:\n%s", gb, wb)
	}
	// Variables out of key order keep their order, as a list.
	if e := objs[0].Spec.Env; len(e) != 2 || e[0].Name != "Z" || e[1].Name != "A" {
		t.Errorf("env = %+v, want Z then A", e)
	}
}

func TestEnvInKeyOrderIsAMapping(t *testing.T) {
	wv := fullWorkload()
	wv.Workload.Spec.Env = []*v1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "007"}}
	b, err := Marshal(FromWorkload(wv))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "env:\n    A: \"1\"\n    B: \"007\"\n") {
		t.Errorf("env not written as a mapping of strings:\n%s", b)
	}
}

func TestAListOfObjectsParses(t *testing.T) {
	wv := fullWorkload()
	other := proto.Clone(wv).(*v1.WorkloadView)
	other.Workload.Name = "api"
	a, _ := Marshal(FromWorkload(wv))
	c, _ := Marshal(FromWorkload(other))
	list := "- " + strings.ReplaceAll(strings.TrimSuffix(string(a), "\n"), "\n", "\n  ") + "\n- " + strings.ReplaceAll(strings.TrimSuffix(string(c), "\n"), "\n", "\n  ") + "\n"
	objs, err := Parse("list.yaml", strings.NewReader(list))
	if err != nil {
		t.Fatalf("%v\n%s", err, list)
	}
	if len(objs) != 2 || objs[0].Metadata.Name != "web" || objs[1].Metadata.Name != "api" {
		t.Fatalf("objects = %+v", objs)
	}
}

func TestFormatBytesUsesTheLargestExactUnit(t *testing.T) {
	for n, want := range map[int64]string{0: "", 1: "1", 1024: "1Ki", 1536 << 10: "1536Ki", 64 << 20: "64Mi", 2 << 30: "2Gi", 1000: "1000"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
