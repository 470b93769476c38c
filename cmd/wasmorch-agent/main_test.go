package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNeitherControlPlaneNorEtcdNorClient keeps the slim agent slim:
// none of the packages that make the wasmorch binary large are linked
// into it (the node's credentials, controlplane/auth, are).
func TestLinksNeitherControlPlaneNorEtcdNorClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list -deps listed %d packages, expected the agent's hundreds", len(deps))
	}
	for _, dep := range deps {
		for _, banned := range []string{
			"go.etcd.io/etcd/server/",
			"github.com/wasmorch/wasmorch/controlplane/api",
			"github.com/wasmorch/wasmorch/controlplane/membership",
			"github.com/wasmorch/wasmorch/internal/cliclient",
			"github.com/containerd/containerd/v2/client",
		} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("wasmorch-agent links %s", dep)
			}
		}
		if dep == "github.com/wasmorch/wasmorch/controlplane" {
			t.Errorf("wasmorch-agent links %s", dep)
		}
	}
}

// TestFailuresAreOneLine: the slim agent fails as wasmorch does, in one
// line saying what to do, naming its own help.
func TestFailuresAreOneLine(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-level", "loud"}, `error: invalid --log-level "loud"; use --log-level debug, info, warn or error`},
		{[]string{"--bogus"}, "error: unknown flag: --bogus; see 'wasmorch-agent --help'"},
		{[]string{"--labels", "novalue"}, `error: invalid label "novalue"; `},
		{[]string{"extra"}, `error: unknown command "extra" for "wasmorch-agent"; see 'wasmorch-agent --help'`},
	} {
		var stdout, stderr strings.Builder
		if code := run(tc.args, &stdout, &stderr); code == 0 {
			t.Errorf("%v: exit 0", tc.args)
		}
		if got := stderr.String(); !strings.HasPrefix(got, tc.want) || strings.Count(got, "\n") != 1 {
			t.Errorf("%v: stderr %q, want one line starting %q", tc.args, got, tc.want)
		}
	}
}
