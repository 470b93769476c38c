package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/controlplane/cloud/local"
	"github.com/wasmorch/wasmorch/controlplane/cloud/plugin"
	"github.com/wasmorch/wasmorch/internal/cliclient"
)

// newProviderCommand is `wasmorch provider`: node providers run as
// plugins of a server's cloud controller (docs/cloud.md).
func newProviderCommand(stopSignals func()) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "provider",
		Short: "Run a node provider as a plugin of a server's cloud controller",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newProviderLocalCommand(stopSignals))
	return cmd
}

// newProviderLocalCommand is `wasmorch provider local`: the local provider
// served over gRPC on a unix socket.
func newProviderLocalCommand(stopSignals func()) *cobra.Command {
	var cp controlplane.Config // only its NodeGroups, filled by --node-group
	var socket, dataDir, logLevel string
	var bootDelay time.Duration
	cmd := &cobra.Command{
		Use:   "local",
		Short: "Serve the local provider (agent processes on this host) on a unix socket",
		Long: `Serve the local provider on a unix socket, as an external plugin: its node groups
(--node-group) are made of 'wasmorch agent' processes on this host, which the
server's cloud controller (started with --node-provider NAME=SOCKET) grows and
shrinks. Each agent runs in a network namespace of its own where this host
allows it (root and iproute2's ip; docs/cloud.md), else on loopback ports.
The agents are stopped when the provider stops.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			if socket == "" {
				return cliclient.Errorf("give --socket PATH, and the same path to 'wasmorch server --node-provider NAME=PATH'", "the provider needs a --socket")
			}
			if len(cp.NodeGroups) == 0 {
				return cliclient.Errorf("give at least one --node-group name=NAME,provider=local,min=N,max=N,instances=N", "the provider has no node group")
			}
			if bootDelay < 0 {
				return cliclient.Errorf("give --boot-delay 0 or more", "--boot-delay %s is negative", bootDelay)
			}
			p, err := local.New(local.Config{DataDir: dataDir, Groups: cp.NodeGroups, Logger: logger, BootDelay: bootDelay})
			if err != nil {
				return cliclient.Errorf("check --node-group and --data-dir", "%v", err)
			}
			defer p.Close()
			lis, err := plugin.Listen(socket)
			if err != nil {
				return cliclient.Errorf("choose another --socket, or stop the provider that answers there", "%v", err)
			}
			names := make([]string, len(cp.NodeGroups))
			for i, g := range cp.NodeGroups {
				names[i] = g.Name
			}
			fmt.Fprintf(cmd.OutOrStdout(), "local provider serving node groups %s on %s\n", strings.Join(names, ", "), socket)
			release := daemonIO{out: cmd.OutOrStdout(), logger: logger, stopSignals: stopSignals}.onShutdown(cmd.Context())
			defer release()
			return ranUntil(cmd.Context(), "the provider", plugin.Serve(cmd.Context(), lis, p))
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket", "", "unix socket to serve on (made for this user only)")
	f.StringVar(&dataDir, "data-dir", ".wasmorch-provider", "directory of the nodes' data dirs (cleared at start)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.DurationVar(&bootDelay, "boot-delay", 0, "how long a new node is Creating before its agent starts, as a cloud's machine boots")
	f.Var(&nodeGroupsValue{cp: &cp}, "node-group", "a node group of agent processes, name=NAME,provider=local,min=N,max=N,instances=N[,zone=Z][,labels=k:v;k:v] (repeat for several)")
	return cmd
}
