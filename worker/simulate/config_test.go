package simulate

import (
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

func TestConfigValidate(t *testing.T) {
	valid := DefaultConfig()
	valid.Servers = []string{"127.0.0.1:7070", "10.0.0.2:7070"}
	valid.Nodes = 5000
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // "" = valid
	}{
		{"the defaults with servers and nodes", func(*Config) {}, ""},
		{"no zones, a zone label of its own", func(c *Config) { c.Zones, c.Labels = 0, map[string]string{"zone": "a"} }, ""},
		{"no server", func(c *Config) { c.Servers = nil }, "at least one control-plane address"},
		{"a server without a port", func(c *Config) { c.Servers = []string{"localhost"} }, `server address "localhost"`},
		{"no nodes", func(c *Config) { c.Nodes = 0 }, "at least one node"},
		{"a malformed token", func(c *Config) { c.JoinToken = "secret" }, "join token"},
		{"a prefix that is no node name", func(c *Config) { c.NamePrefix = "sim/" }, `name prefix "sim/"`},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir is required"},
		{"negative slots", func(c *Config) { c.InstancesPerNode = -1 }, "InstancesPerNode -1"},
		{"no memory", func(c *Config) { c.MemoryBytes = 0 }, "MemoryBytes must be positive"},
		{"no cpu", func(c *Config) { c.CPUMillis = 0 }, "CPUMillis must be positive"},
		{"negative zones", func(c *Config) { c.Zones = -1 }, "Zones -1"},
		{"no concurrency", func(c *Config) { c.Concurrency = 0 }, "Concurrency"},
		{"a zone label beside zones", func(c *Config) { c.Labels = map[string]string{"zone": "a"} }, `label "zone" is set per node`},
		{"the simulated label", func(c *Config) { c.Labels = map[string]string{"simulated": "false"} }, `label "simulated"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.change(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tc.want != "" && (!errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate = %v, want an invalid argument containing %q", err, tc.want)
			}
		})
	}
}

func TestNodeNamesAndZones(t *testing.T) {
	c := DefaultConfig()
	c.Zones = 4
	if got := c.NodeName(7); got != "sim-0007" {
		t.Errorf("NodeName(7) = %q, want sim-0007", got)
	}
	if got := c.NodeName(12345); got != "sim-12345" {
		t.Errorf("NodeName(12345) = %q, want sim-12345", got)
	}
	if got := c.nodeLabels(7)["zone"]; got != "z3" {
		t.Errorf("node 7 of 4 zones is in %q, want z3", got)
	}
	c.Zones = 0
	if _, ok := c.nodeLabels(7)["zone"]; ok {
		t.Error("with no zones a node still has a zone label")
	}
}
