package plugin

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/cloud/local"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
)

// serve serves p on a socket of the test's own and returns a client.
func serve(t *testing.T, p provider.Provider) *Client {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "p.sock")
	lis, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = Serve(ctx, lis, p) }()
	c, err := Dial("ext", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(); cancel(); <-done })
	return c
}

// TestLocalProviderThroughThePlugin: the calls and their refusals reach a
// real local provider through the socket, and its groups come back as the
// plugin's.
func TestLocalProviderThroughThePlugin(t *testing.T) {
	lp, err := local.New(local.Config{DataDir: t.TempDir(), Groups: []provider.NodeGroup{
		{Name: "pool", Provider: local.Name, Min: 0, Max: 2, Template: provider.Template{Instances: 10, Labels: map[string]string{"disk": "ssd"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lp.Close() })
	c := serve(t, lp)
	ctx := context.Background()

	gs, err := c.NodeGroups(ctx)
	if err != nil || len(gs) != 1 {
		t.Fatalf("NodeGroups = %v, %v", gs, err)
	}
	if g := gs[0]; g.Name != "pool" || g.Provider != "ext" || g.Max != 2 || g.Zone != local.DefaultZone || g.Template.Instances != 10 || g.Template.Labels["disk"] != "ssd" {
		t.Errorf("group = %+v", g)
	}
	if n, err := c.TargetSize(ctx, "pool"); err != nil || n != 0 {
		t.Errorf("TargetSize = %d, %v", n, err)
	}
	if nodes, err := c.Nodes(ctx, "pool"); err != nil || len(nodes) != 0 {
		t.Errorf("Nodes = %v, %v", nodes, err)
	}
	three := make([]provider.NewNode, 3)
	for i := range three {
		three[i] = provider.NewNode{Name: "pool-" + string(rune('a'+i)), Labels: map[string]string{provider.LabelGroup: "pool"}, Token: "t", Servers: []string{"127.0.0.1:1"}}
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"past max", c.IncreaseSize(ctx, "pool", three), "group pool has 0 nodes: 3 more would pass its max 2"},
		{"another group's node", c.IncreaseSize(ctx, "pool", []provider.NewNode{{Name: "x", Labels: map[string]string{provider.LabelGroup: "big"}, Token: "t", Servers: []string{"a:1"}}}), "its labels must name group pool"},
		{"an unknown group", c.IncreaseSize(ctx, "big", three[:1]), `local provider has no node group "big"`},
		{"deleting a node it does not have", c.DeleteNodes(ctx, "pool", []string{"pool-zzzzz"}), "group pool has no node pool-zzzzz"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) || !strings.Contains(tc.err.Error(), "provider ext") {
			t.Errorf("%s: %v, want an error of provider ext with %q", tc.name, tc.err, tc.want)
		}
	}
	if n, _ := c.TargetSize(ctx, "pool"); n != 0 {
		t.Errorf("refused increases left a target size of %d", n)
	}
}

// garbage is a plugin whose groups are not valid.
type garbage struct{ provider.Provider }

func (garbage) NodeGroups(context.Context) ([]provider.NodeGroup, error) {
	return []provider.NodeGroup{{Name: "pool", Min: 3, Max: 1, Template: provider.Template{Instances: 1}}}, nil
}

func TestABadPluginIsAnError(t *testing.T) {
	ctx := context.Background()
	c := serve(t, garbage{})
	if _, err := c.NodeGroups(ctx); err == nil || !strings.Contains(err.Error(), "node group pool: min 3 is more than max 1") {
		t.Errorf("a group with min > max: %v", err)
	}
	down, err := Dial("ext", filepath.Join(t.TempDir(), "nobody.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if _, err := down.Nodes(ctx, "pool"); err == nil || !strings.Contains(err.Error(), "provider ext") || strings.Contains(err.Error(), "\n") {
		t.Errorf("a plugin that is down: %v, want one line naming it", err)
	}
}
