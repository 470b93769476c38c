package manifest

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseReadsEveryDocument(t *testing.T) {
	src := `# leading comment
---
apiVersion: wasmorch.dev/v1
kind: Config
metadata: {name: cfg}
data:
  A: "1"
---
---
apiVersion: wasmorch.dev/v1
kind: Workload
metadata:
  name: fn
spec:
  module: greet.wasm
  replicas: 0
  configs: [cfg]
  env: {B: two}
  http:
    route: /greet
    timeout: 5s
`
	objs, err := Parse("m.yaml", strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("got %d objects, want 2", len(objs))
	}
	if c := objs[0]; c.Kind != KindConfig || c.Metadata.Name != "cfg" || c.Data["A"] != "1" || c.Line != 3 {
		t.Errorf("config = %+v", c)
	}
	w := objs[1]
	if w.Kind != KindWorkload || w.Spec == nil || w.Spec.Module != "greet.wasm" || w.Spec.Replicas == nil || *w.Spec.Replicas != 0 {
		t.Fatalf("workload = %+v", w)
	}
	if w.Spec.HTTP == nil || w.Spec.HTTP.Route != "/greet" || w.Spec.HTTP.Timeout != 5*time.Second {
		t.Errorf("http = %+v", w.Spec.HTTP)
	}
	if len(w.Spec.Configs) != 1 || len(w.Spec.Env) != 1 || w.Spec.Env[0] != (EnvVar{"B", "two"}) {
		t.Errorf("spec = %+v", w.Spec)
	}
}

func TestParseRefusesBadDocumentsWithTheirLine(t *testing.T) {
	const head = "apiVersion: wasmorch.dev/v1\n"
	for _, tc := range []struct {
		name, src, want string
	}{
		{"unknown top-level field", head + "kind: Config\nmetadata: {name: c}\ndatas: {}\n", `m.yaml:4: unknown field "datas"`},
		{"unknown nested field", head + "kind: Workload\nmetadata: {name: w}\nspec:\n  module: a.wasm\n  replicass: 2\n", `m.yaml:6: unknown field "spec.replicass"`},
		{"field in a nested map", head + "kind: Workload\nmetadata: {name: w}\nspec:\n  module: a.wasm\n  http:\n    rout: /x\n", `m.yaml:7: unknown field "spec.http.rout"`},
		{"case typo suggests", head + "kind: Config\nmetadata: {Name: c}\n", `unknown field "metadata.Name" (did you mean "name"?)`},
		{"wrong type", head + "kind: Workload\nmetadata: {name: w}\nspec:\n  module: a.wasm\n  replicas: many\n", "m.yaml:6: cannot unmarshal !!str `many` into int"},
		{"second document", head + "kind: Config\nmetadata: {name: c}\n---\n" + head + "kind: Config\nmetadata: {name: d}\nbogus: 1\n", `m.yaml:8: unknown field "bogus"`},
		{"no apiVersion", "kind: Config\nmetadata: {name: c}\n", `m.yaml:1: apiVersion "" is not supported`},
		{"unknown kind", head + "kind: Deployment\nmetadata: {name: c}\n", `kind "Deployment" is not known`},
		{"no name", head + "kind: Config\ndata: {}\n", "has no metadata.name"},
		{"workload without source", head + "kind: Workload\nmetadata: {name: w}\nspec: {replicas: 1}\n", "exactly one of spec.module and spec.image"},
		{"config with spec", head + "kind: Config\nmetadata: {name: c}\nspec: {module: a.wasm}\n", "a Config has data, not spec"},
		{"twice", head + "kind: Config\nmetadata: {name: c}\n---\n" + head + "kind: Config\nmetadata: {name: c}\n", "m.yaml:5: Config/c is defined twice (first at line 1)"},
		{"not a mapping", "- a\n- b\n", "m.yaml:1: a document must be a mapping"},
		{"bad yaml", head + "kind: [\n", "m.yaml:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := Parse("m.yaml", strings.NewReader(tc.src))
			if err == nil {
				t.Fatalf("accepted: %+v", objs)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			if objs != nil {
				t.Fatalf("returned objects with an error: %+v", objs)
			}
		})
	}
}

func TestTheExampleManifestParses(t *testing.T) {
	f, err := os.Open("../../testdata/app.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs, err := Parse("app.yaml", f)
	if err != nil {
		t.Fatal(err)
	}
	kinds := ""
	for _, o := range objs {
		kinds += o.Kind + " "
	}
	if kinds != "Config Secret Workload " {
		t.Fatalf("kinds = %q", kinds)
	}
}

// laughs is a manifest whose arch list holds levels nested anchors of ten
// aliases each: 10^levels strings when decoded.
func laughs(levels int) string {
	var b strings.Builder
	b.WriteString("apiVersion: wasmorch.dev/v1\nkind: Workload\nmetadata: {name: w}\nspec:\n  module: a.wasm\n  args: &a0 [lol]\n  arch:\n")
	for l := 1; l <= levels; l++ {
		fmt.Fprintf(&b, "    - &a%d [", l)
		for i := range 10 {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", l-1)
		}
		b.WriteString("]\n")
	}
	return b.String()
}

// TestParseBoundsAliasExpansion: a billion laughs in a few hundred bytes,
// and a flat list of aliases of one long string, are refused before they
// are decoded; a few aliases are decoded as YAML says.
func TestParseBoundsAliasExpansion(t *testing.T) {
	var flat strings.Builder
	flat.WriteString("apiVersion: wasmorch.dev/v1\nkind: Workload\nmetadata: {name: w}\nspec:\n  module: a.wasm\n")
	flat.WriteString("  env: {A: &big " + strings.Repeat("x", 64<<10) + "}\n  args: [")
	for i := range 300 {
		if i > 0 {
			flat.WriteString(", ")
		}
		flat.WriteString("*big")
	}
	flat.WriteString("]\n")
	for name, src := range map[string]string{
		"a billion laughs":         laughs(9),
		"flat aliases of a string": flat.String(),
	} {
		t.Run(name, func(t *testing.T) {
			objs, err := Parse("m.yaml", strings.NewReader(src))
			if err == nil || !strings.Contains(err.Error(), "aliases expand the manifest by more than 16 MiB") {
				t.Fatalf("Parse = %d objects, %v; want the alias expansion refused", len(objs), err)
			}
			if !strings.HasPrefix(err.Error(), "m.yaml:1: ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not one line naming the document", err)
			}
		})
	}

	src := "apiVersion: wasmorch.dev/v1\nkind: Workload\nmetadata: {name: w}\nspec:\n  module: a.wasm\n  env: &env {A: one, B: two}\n  selector: *env\n  args: [&x hi, *x, *x]\n"
	objs, err := Parse("m.yaml", strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	if s := objs[0].Spec; s.Selector["B"] != "two" || strings.Join(s.Args, ",") != "hi,hi,hi" {
		t.Fatalf("aliases decoded to %+v", s)
	}
}

func TestParseRefusesAnAliasOfItself(t *testing.T) {
	src := "apiVersion: wasmorch.dev/v1\nkind: Workload\nmetadata: {name: w}\nspec:\n  module: a.wasm\n  args: &a [x, *a]\n"
	if _, err := Parse("m.yaml", strings.NewReader(src)); err == nil || !strings.Contains(err.Error(), "m.yaml:6: an anchor's value contains an alias of itself") {
		t.Fatalf("Parse = %v", err)
	}
}

func TestParseRefusesAnOversizedFile(t *testing.T) {
	src := "apiVersion: wasmorch.dev/v1\nkind: Config\nmetadata: {name: c}\ndata: {A: " + strings.Repeat("x", 16<<20) + "}\n"
	if _, err := Parse("m.yaml", strings.NewReader(src)); err == nil || err.Error() != "m.yaml: the manifest is larger than 16 MiB: split it into several files" {
		t.Fatalf("Parse = %v", err)
	}
}

// TestParseNodeGroup: a NodeGroup's spec holds --node-group's keys, read
// strictly (a workload's field in it is an unknown field, with its line).
func TestParseNodeGroup(t *testing.T) {
	src := `apiVersion: wasmorch.dev/v1
kind: NodeGroup
metadata: {name: pool}
spec:
  provider: local
  min: 1
  max: 3
  instances: 10
  labels: {disk: ssd}
  memory: 8Gi
  cpu: 4000m
  runtimes: [wasm]
`
	objs, err := Parse("g.yaml", strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	g := objs[0].NodeGroup
	if len(objs) != 1 || objs[0].Kind != KindNodeGroup || objs[0].Spec != nil || g == nil || g.Provider != "local" || g.Min != 1 || g.Max != 3 ||
		g.Instances != 10 || g.Labels["disk"] != "ssd" || g.Memory != "8Gi" || g.CPU != "4000m" || len(g.Runtimes) != 1 {
		t.Fatalf("parsed %+v (%+v)", objs, g)
	}
	for _, tc := range []struct{ src, want string }{
		{strings.Replace(src, "  min: 1", "  replicas: 1", 1), `g.yaml:6: unknown field "spec.replicas"`},
		{strings.Replace(src, "  provider: local\n", "", 1), "node group pool has no spec.provider"},
		{"apiVersion: wasmorch.dev/v1\nkind: NodeGroup\nmetadata: {name: pool}\n", "node group pool has no spec"},
		{strings.Replace(src, "metadata: {name: pool}", "metadata: {name: pool, labels: {a: b}}", 1), "the labels of its nodes go in spec.labels"},
		{strings.Replace(src, "  max: 3", "  max: three", 1), "g.yaml:7"},
	} {
		if _, err := Parse("g.yaml", strings.NewReader(tc.src)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse = %v, want an error with %q", err, tc.want)
		}
	}
}
