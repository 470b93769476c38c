package provider

import (
	"fmt"
	"strings"
	"testing"
)

func parseBytes(s string) (int64, error) {
	var n int64
	var unit string
	if _, err := fmt.Sscanf(s, "%d%s", &n, &unit); err != nil || unit != "Gi" {
		return 0, fmt.Errorf("%q is not NGi", s)
	}
	return n << 30, nil
}

func TestParseGroup(t *testing.T) {
	g, err := ParseGroup("name=pool,provider=local,min=1,max=3,instances=10,zone=z1,labels=disk:ssd;tier:web,arch=arm64,memory=4Gi,cpu=2000m,runtimes=wasm;container,instance-type=m5.large", parseBytes)
	if err != nil {
		t.Fatal(err)
	}
	if g.Name != "pool" || g.Provider != "local" || g.Min != 1 || g.Max != 3 || g.Zone != "z1" || g.Template.Instances != 10 ||
		g.Template.Arch != "arm64" || g.Template.MemoryBytes != 4<<30 || g.Template.CPUMillis != 2000 ||
		g.Template.Labels["disk"] != "ssd" || g.Template.Labels["tier"] != "web" || !g.Template.HasRuntime("container") {
		t.Errorf("parsed %+v", g)
	}
	if got := g.NodeLabels("z1"); len(got) != 6 || got[LabelGroup] != "pool" || got[LabelZone] != "z1" || got[LabelWellKnownZone] != "z1" ||
		got[LabelInstanceType] != "m5.large" || got["disk"] != "ssd" {
		t.Errorf("node labels %v", got)
	}
	for _, tc := range []struct{ in, want string }{
		{"provider=local,max=1,instances=1", "name is missing"},
		{"name=pool,max=1,instances=1", "node group pool: provider is missing"},
		{"name=pool,provider=local,min=2,max=1,instances=1", "node group pool: min 2 is more than max 1"},
		{"name=pool,provider=local,min=-1,max=1,instances=1", "node group pool: min -1 is negative"},
		{"name=pool,provider=local,max=0,instances=1", "node group pool: max 0 must be at least 1"},
		{"name=pool,provider=local,max=1", "node group pool: instances per node 0 must be at least 1"},
		{"name=pool,provider=local,max=x,instances=1", `max: "x" is not a whole number`},
		{"name=pool,provider=local,max=1,max=2,instances=1", "max given twice"},
		{"name=pool,provider=local,max=1,instances=1,size=3", `unknown key "size"`},
		{"name=Pool,provider=local,max=1,instances=1", "is not a DNS label"},
		{"name=pool,provider=local,max=1,instances=1,labels=zone:a", "node group pool: label zone is set by the provider"},
		{"name=pool,provider=local,max=1,instances=1,labels=disk", `label "disk" is not KEY:VALUE`},
		{"name=pool,provider=local,max=1,instances=1,labels=wasmorch.io/x:a", "node group pool: label wasmorch.io/x is set by the provider"},
		{"name=pool,provider=local,max=1,instances=1,instance-type=a/b", "node group pool: instance type: label value"},
		{"name=pool,provider=local,max=1,instances=1,runtimes=jvm", `runtime "jvm" is not wasm or container`},
	} {
		_, err := ParseGroup(tc.in, parseBytes)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseGroup(%q) = %v, want one line with %q", tc.in, err, tc.want)
		}
	}
}

func TestProviderIDLabel(t *testing.T) {
	for id, want := range map[string]string{
		"local:///pool-x3k9q":                  "pool-x3k9q",
		"aws:///us-east-1a/i-0abc123":          "i-0abc123",
		"gce://project/europe-west1-b/node-17": "node-17",
		"plain":                                "plain",
		"local:///":                            "",
		"x:///" + strings.Repeat("a", 64):      "",
	} {
		if got := ProviderIDLabel(id); got != want {
			t.Errorf("ProviderIDLabel(%q) = %q, want %q", id, got, want)
		}
	}
}
