package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/agentcmd"
	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/clirun"
	"github.com/wasmorch/wasmorch/internal/version"
)

const defaultServer = agentcmd.DefaultServer

// newRootCommand builds the command tree. stopSignals restores the default
// signal handling, so that a second Ctrl-C during a slow shutdown kills
// the process.
func newRootCommand(stopSignals func()) *cobra.Command {
	root := &cobra.Command{
		Use:   "wasmorch",
		Short: "Run WebAssembly workloads on one machine or many",
		Long: `wasmorch runs WebAssembly modules, and OCI containers where Wasm cannot run
yet, as workloads: it places their instances on workers, restarts them when
they fail, scales them, serves HTTP functions with a fresh sandbox per
request, and rolls out new versions.

Start a cluster of one with 'wasmorch up', then from another terminal:
  wasmorch deploy testdata/hello.wasm --name hello --replicas 3 --restart on-failure
  wasmorch get instances
  wasmorch logs hello

Every flag can also be set with a WASMORCH_<FLAG> variable (dashes become
underscores: --data-dir is WASMORCH_DATA_DIR) or a key named like the flag in
the config file; a flag on the command line wins over the variable, which
wins over the file. Flags that name or describe one object (deploy --name and
--env, scale --replicas, get --workload) come from the command line only.`,
		Version:       version.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applySettings(cmd)
		},
		// Args and RunE make an unknown command an error with a suggestion,
		// rather than cobra's multi-line message.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			hint := "see 'wasmorch --help'"
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				hint = fmt.Sprintf("did you mean 'wasmorch %s'? see 'wasmorch --help'", s[0])
			}
			return &cliclient.Error{What: fmt.Sprintf("unknown command %q", args[0]), Hint: hint}
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.PersistentFlags().String(configFlag, "", clirun.ConfigFlagHelp)
	root.CompletionOptions.HiddenDefaultCmd = false
	root.SuggestionsMinimumDistance = 2
	root.AddGroup(
		&cobra.Group{ID: "run", Title: "Running a cluster:"},
		&cobra.Group{ID: "client", Title: "Working with workloads:"},
		&cobra.Group{ID: "members", Title: "Control-plane members and backups:"},
	)
	for _, c := range []*cobra.Command{newMembersCommand(), newMemberCommand(), newSnapshotCommand(), newTokenCommand(), newCredentialsCommand(), newCACommand()} {
		c.GroupID = "members"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newUpCommand(stopSignals), newServerCommand(stopSignals), newAgentCommand(stopSignals), newSimulateCommand(stopSignals), newProviderCommand(stopSignals)} {
		c.GroupID = "run"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newDeployCommand(), newGetCommand(), newLogsCommand(), newTopCommand(), newScaleCommand(), newDeleteCommand(), newVersionCommand()} {
		c.GroupID = "client"
		root.AddCommand(c)
	}
	// configs
	for _, c := range []*cobra.Command{newApplyCommand(), newDiffCommand(), newConfigCommand(), newSecretCommand(), newRolloutCommand(), newUICommand(), newVolumeCommand()} {
		c.GroupID = "client"
		root.AddCommand(c)
	}
	// registry.go: push speaks to a registry, not to --server.
	root.AddGroup(&cobra.Group{ID: "registries", Title: "Working with registries:"})
	for _, c := range []*cobra.Command{newPushCommand(), newRegistryCommand()} {
		c.GroupID = "registries"
		root.AddCommand(c)
	}
	root.AddGroup(&cobra.Group{ID: "nodes", Title: "Working with nodes:"})
	for _, c := range []*cobra.Command{newDescribeCommand(), newCordonCommand(), newUncordonCommand(), newDrainCommand(), newNodeCommand()} {
		c.GroupID = "nodes"
		root.AddCommand(c)
	}
	return root
}

// addServerFlag adds --server, and --credentials, to a client command.
func addServerFlag(cmd *cobra.Command) *string {
	cmd.Flags().String(credentialsFlag, "", "admin credential file (default: the one 'wasmorch up'/'server' wrote for --server in ~/.config/wasmorch/credentials/; also WASMORCH_CREDENTIALS)")
	return cmd.Flags().String("server", defaultServer, "control-plane API address HOST:PORT (also WASMORCH_SERVER)")
}

// dial prepares a client for a client command, with its credential
// (creds.go).
func dial(cmd *cobra.Command, server string) (*cliclient.Client, error) {
	cred, tried, err := findCredential(cmd, server)
	if err != nil {
		return nil, err
	}
	// The command as typed after "wasmorch" ("config set", not "set"),
	// for hints such as "see 'wasmorch config set --help'".
	command := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
	return cliclient.Dial(server, command, cliclient.WithCredential(cred, tried))
}
