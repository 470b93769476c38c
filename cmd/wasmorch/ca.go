package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/cliclient"
)

// newCACommand is `wasmorch ca create`: the cluster CA of a static
// bootstrap, made once and handed to every member with --ca-dir.
func newCACommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Create the cluster CA for a statically bootstrapped cluster",
	}
	var dir string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a cluster CA in a directory (ca.crt, ca.key)",
		Long: `Create a cluster certificate authority in --dir: ca.crt and ca.key (0600).
Members started together with --initial-cluster need the same CA before their
etcd peers can speak TLS to each other: give each of them --ca-dir DIR on its
first start. Keep ca.key as secret as the members' data dirs. A member started
with --init or --join needs none of this: it creates or receives the CA.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return cliclient.Errorf("e.g. 'wasmorch ca create --dir ./cluster-ca'", "ca create needs --dir")
			}
			_, created, err := auth.LoadOrCreateCA(dir)
			if err != nil {
				return err
			}
			if !created {
				fmt.Fprintf(cmd.OutOrStdout(), "%s already holds a cluster CA; kept it\n", dir)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created the cluster CA in %s (ca.crt, and ca.key: keep it secret)\n", dir)
			return nil
		},
	}
	create.Flags().StringVar(&dir, "dir", "", "directory to write ca.crt and ca.key to (created if missing)")
	cmd.AddCommand(create)
	return cmd
}
