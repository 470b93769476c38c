package cliclient

import (
	"errors"
	"strings"
	"testing"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"hello", true},
		{"a", true},
		{"web-1", true},
		{"a0-b1", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{strings.Repeat("a", 64), false},
		{"Hello_World", false},
		{"hello_world", false},
		{"Hello", false},
		{"1hello", false},
		{"-hello", false},
		{"hello-", false},
		{"hello.world", false},
		{"héllo", false},
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestNameFromFile(t *testing.T) {
	for in, want := range map[string]string{
		"testdata/hello.wasm": "hello",
		"hello.wasm":          "hello",
		"/abs/path/tick.wasm": "tick",
		"noext":               "noext",
	} {
		if got := NameFromFile(in); got != want {
			t.Errorf("NameFromFile(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseMemory(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true},
		{"0", 0, true},
		{"1048576", 1 << 20, true},
		{"64Mi", 64 << 20, true},
		{"128MiB", 128 << 20, true},
		{"1Gi", 1 << 30, true},
		{"1GiB", 1 << 30, true},
		{"512Ki", 512 << 10, true},
		{"1.5Gi", 3 << 29, true},
		{"64M", 64e6, true},
		{"64MB", 64e6, true},
		{"4Gi", 4 << 30, true},
		{" 64Mi ", 64 << 20, true},
		{"lots", 0, false},
		{"64mb", 0, false},
		{"Mi", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"5Gi", 0, false},
		{"64 Mi", 0, false},
		{"1..2Mi", 0, false},
	} {
		got, err := ParseMemory(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseEnv(t *testing.T) {
	got, err := ParseEnv([]string{"A=1", "B=", "C=x=y", "A=2"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A=2", "B=", "C=x=y"}
	if len(got) != len(want) {
		t.Fatalf("ParseEnv = %v, want %v", got, want)
	}
	for i, e := range got {
		if e.GetName()+"="+e.GetValue() != want[i] {
			t.Errorf("ParseEnv[%d] = %s=%s, want %s", i, e.GetName(), e.GetValue(), want[i])
		}
	}
	for _, bad := range []string{"=x", "NOEQUALS", "", "A=\x00"} {
		if _, err := ParseEnv([]string{bad}); err == nil {
			t.Errorf("ParseEnv(%q) accepted it", bad)
		}
	}
}

func TestParseRestart(t *testing.T) {
	for in, want := range map[string]wasmorchv1.RestartPolicy{
		"":           wasmorchv1.RestartPolicy_RESTART_POLICY_ALWAYS,
		"always":     wasmorchv1.RestartPolicy_RESTART_POLICY_ALWAYS,
		"on-failure": wasmorchv1.RestartPolicy_RESTART_POLICY_ON_FAILURE,
		"never":      wasmorchv1.RestartPolicy_RESTART_POLICY_NEVER,
	} {
		if got, err := ParseRestart(in); err != nil || got != want {
			t.Errorf("ParseRestart(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"sometimes", "Always", "onfailure"} {
		if _, err := ParseRestart(bad); err == nil {
			t.Errorf("ParseRestart(%q) accepted it", bad)
		}
	}
}

func TestDeployConfigRequest(t *testing.T) {
	t.Run("builds the spec from the flags", func(t *testing.T) {
		name, spec, err := DeployConfig{
			File: "testdata/hello.wasm", Replicas: 3, Env: []string{"K=V"}, Memory: "64Mi",
			Restart: "on-failure", Args: []string{"a", "b"},
		}.request()
		if err != nil {
			t.Fatal(err)
		}
		if name != "hello" || spec.GetKind() != "wasm" || spec.GetReplicas() != 3 || spec.GetMemoryBytes() != 64<<20 ||
			spec.GetRestart() != wasmorchv1.RestartPolicy_RESTART_POLICY_ON_FAILURE ||
			len(spec.GetEnv()) != 1 || strings.Join(spec.GetArgs(), " ") != "a b" {
			t.Errorf("request() = %q, %v", name, spec)
		}
	})
	for _, tc := range []struct {
		name string
		cfg  DeployConfig
		want string // in the message
	}{
		{"invalid name", DeployConfig{File: "x.wasm", Name: "Hello_World", Replicas: 1}, `invalid --name: "Hello_World"`},
		{"name from an invalid file name", DeployConfig{File: "dir/My_Mod.wasm", Replicas: 1}, "pass --name"},
		{"negative replicas", DeployConfig{File: "x.wasm", Replicas: -1}, "--replicas -1"},
		{"memory", DeployConfig{File: "x.wasm", Replicas: 1, Memory: "lots"}, `"lots" is not a size`},
		{"env", DeployConfig{File: "x.wasm", Replicas: 1, Env: []string{"=v"}}, "--env"},
		{"restart", DeployConfig{File: "x.wasm", Replicas: 1, Restart: "sometimes"}, "always, on-failure or never"},
		{"timeout", DeployConfig{File: "x.wasm", Replicas: 1, Timeout: -1}, "--timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.cfg.request()
			var ue *Error
			if !errors.As(err, &ue) || ue.Hint == "" {
				t.Fatalf("request() = %v, want an *Error with a hint", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("request() = %q, want it to mention %q", err, tc.want)
			}
		})
	}
}
