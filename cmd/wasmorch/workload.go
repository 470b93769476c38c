package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/version"
)

// versionTimeout bounds how long `version` waits for the server, which it
// only mentions if it answers.
const versionTimeout = 2 * time.Second

// oneName checks that a command got exactly one workload name.
func oneName(cmd *cobra.Command, args []string, example string) (string, error) {
	if len(args) != 1 {
		return "", cliclient.Errorf("e.g. '"+example+"'", "%s takes one workload name, got %d", cmd.Name(), len(args))
	}
	return args[0], nil
}

func newLogsCommand() *cobra.Command {
	var tail int64
	var server *string
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a workload's output (stdout and stderr)",
		Long: `Print the output (stdout and stderr) that the workload's instances wrote, as
their workers kept it. With several instances, each line starts with
[<instance id>].`,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneName(cmd, args, "wasmorch logs hello")
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			return client.Logs(cmd.Context(), name, tail, cmd.OutOrStdout())
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().Int64Var(&tail, "tail", 0, "only the last BYTES of each instance's output (0: all that is kept)")
	return cmd
}

func newScaleCommand() *cobra.Command {
	var replicas int
	var server *string
	cmd := &cobra.Command{
		Use:     "scale NAME --replicas N",
		Short:   "Change a workload's number of replicas",
		Example: "  wasmorch scale hello --replicas 3",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneName(cmd, args, "wasmorch scale hello --replicas 3")
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("replicas") {
				return cliclient.Errorf("e.g. 'wasmorch scale "+name+" --replicas 3'", "scale needs --replicas N")
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			w, err := client.Scale(cmd.Context(), name, replicas)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "scaled %s to %d replicas\n", w.Name, w.Replicas)
			return nil
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().IntVar(&replicas, "replicas", 0, "number of instances (0 or more; required)")
	commandLineOnly(cmd.Flags(), "replicas")
	return cmd
}

func newDeleteCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a workload and stop its instances",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneName(cmd, args, "wasmorch delete hello")
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			if err := client.Delete(cmd.Context(), name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", name)
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}

func newVersionCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client's version, and the server's if it answers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "client: %s\n", version.Version)
			client, err := dial(cmd, *server)
			if err != nil {
				fmt.Fprintf(out, "server: unknown (%v)\n", err)
				return nil
			}
			defer client.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), versionTimeout)
			defer cancel()
			client.ConnectTimeout = versionTimeout
			v, member, err := client.ServerVersion(ctx)
			if err != nil {
				fmt.Fprintf(out, "server: unknown (%v)\n", err)
				return nil
			}
			fmt.Fprintf(out, "server: %s (member %s at %s)\n", v, member, client.Addr())
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}
