package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// captured is what a test command saw once its flags were settled.
type captured struct {
	server, dataDir, name string
	replicas              int
	servers, env          []string
}

// newSettingsTestRoot builds a root like the real one (same pre-run hook
// and --config flag) with one command whose flags cover the value kinds.
func newSettingsTestRoot(got *captured) *cobra.Command {
	root := &cobra.Command{
		Use:           "wasmorch",
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applySettings(cmd)
		},
	}
	root.PersistentFlags().String(configFlag, "", "")
	cmd := &cobra.Command{Use: "try", RunE: func(*cobra.Command, []string) error { return nil }}
	f := cmd.Flags()
	f.StringVar(&got.server, "server", defaultServer, "")
	f.StringVar(&got.dataDir, "data-dir", ".wasmorch", "")
	f.StringVar(&got.name, "name", "", "")
	f.IntVar(&got.replicas, "replicas", 1, "")
	f.StringSliceVar(&got.servers, "servers", nil, "")
	f.StringArrayVar(&got.env, "env", nil, "")
	commandLineOnly(f, "name", "env")
	root.AddCommand(cmd)
	return root
}

// isolate gives the test an empty environment as far as wasmorch is
// concerned, and a config home of its own.
func isolate(t *testing.T) (configHome string) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envPrefix+"_") {
			t.Setenv(k, "")
			_ = os.Unsetenv(k)
		}
	}
	configHome = t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", configHome)
	return configHome
}

func writeConfig(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSettingsPrecedenceIsFlagThenEnvThenFileThenDefault(t *testing.T) {
	const file = "server: file:1\ndata-dir: /from/file\nreplicas: 4\nservers: [a:1, b:2]\nname: from-file\nenv: [A=file]\n"
	for _, tc := range []struct {
		name  string
		file  bool
		env   map[string]string
		args  []string
		check func(t *testing.T, got captured)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, got captured) {
				if got.server != defaultServer || got.dataDir != ".wasmorch" || got.replicas != 1 || got.servers != nil {
					t.Errorf("got %+v", got)
				}
			},
		},
		{
			name: "the config file over defaults",
			file: true,
			check: func(t *testing.T, got captured) {
				if got.server != "file:1" || got.dataDir != "/from/file" || got.replicas != 4 || strings.Join(got.servers, ",") != "a:1,b:2" {
					t.Errorf("got %+v", got)
				}
			},
		},
		{
			name: "the environment over the file",
			file: true,
			env:  map[string]string{"WASMORCH_SERVER": "env:1", "WASMORCH_DATA_DIR": "/from/env", "WASMORCH_SERVERS": "c:3,d:4"},
			check: func(t *testing.T, got captured) {
				if got.server != "env:1" || got.dataDir != "/from/env" || got.replicas != 4 || strings.Join(got.servers, ",") != "c:3,d:4" {
					t.Errorf("got %+v", got)
				}
			},
		},
		{
			name: "flags over the environment",
			file: true,
			env:  map[string]string{"WASMORCH_SERVER": "env:1", "WASMORCH_REPLICAS": "7"},
			args: []string{"--server", "flag:1", "--replicas", "0"},
			check: func(t *testing.T, got captured) {
				if got.server != "flag:1" || got.replicas != 0 || got.dataDir != "/from/file" {
					t.Errorf("got %+v", got)
				}
			},
		},
		{
			name: "per-invocation flags only come from the command line",
			file: true,
			env:  map[string]string{"WASMORCH_NAME": "from-env", "WASMORCH_ENV": "A=env"},
			check: func(t *testing.T, got captured) {
				if got.name != "" || got.env != nil {
					t.Errorf("got %+v", got)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := isolate(t)
			if tc.file {
				writeConfig(t, filepath.Join(home, "wasmorch", "config.yaml"), file)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var got captured
			root := newSettingsTestRoot(&got)
			root.SetArgs(append([]string{"try"}, tc.args...))
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)
		})
	}
}

func TestAnExplicitConfigFileMustExistAndParse(t *testing.T) {
	dir := isolate(t)
	var got captured

	root := newSettingsTestRoot(&got)
	root.SetArgs([]string{"try", "--config", filepath.Join(dir, "missing.yaml")})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "cannot read the config file") {
		t.Errorf("missing --config: %v", err)
	}

	bad := filepath.Join(dir, "bad.yaml")
	writeConfig(t, bad, "server: [unclosed\n")
	t.Setenv("WASMORCH_CONFIG", bad)
	root = newSettingsTestRoot(&got)
	root.SetArgs([]string{"try"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("unparsable WASMORCH_CONFIG: %v", err)
	}

	good := filepath.Join(dir, "good.yaml")
	writeConfig(t, good, "server: explicit:1\n")
	root = newSettingsTestRoot(&got)
	root.SetArgs([]string{"try", "--config", good})
	if err := root.Execute(); err != nil || got.server != "explicit:1" {
		t.Errorf("--config good.yaml: %v, server %q", err, got.server)
	}
}

func TestAnInvalidSettingNamesWhereItCameFrom(t *testing.T) {
	isolate(t)
	t.Setenv("WASMORCH_REPLICAS", "many")
	var got captured
	root := newSettingsTestRoot(&got)
	root.SetArgs([]string{"try"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "--replicas from WASMORCH_REPLICAS") {
		t.Errorf("Execute = %v", err)
	}
}

func TestEveryCommandGetsTheSettingsHook(t *testing.T) {
	root := newRootCommand(func() {})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c != root && (c.PersistentPreRunE != nil || c.PersistentPreRun != nil) {
			t.Errorf("%s has its own persistent pre-run, which would replace the root's settings hook", c.CommandPath())
		}
		if c.Runnable() && c != root && c.GroupID == "client" {
			if f := c.Flags().Lookup("server"); f == nil || f.DefValue != defaultServer {
				t.Errorf("%s: --server missing or not defaulting to %s", c.CommandPath(), defaultServer)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
