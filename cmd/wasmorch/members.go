package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/cliout"
)

// newMembersCommand is `wasmorch members`: the control-plane members.
func newMembersCommand() *cobra.Command {
	var output string
	var server *string
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the control-plane members, their health and the leader",
		Long: `List the control-plane members as the member you ask sees them: each one's
health, which is the etcd leader and which runs the scheduler and controllers
(ROLE), and where its API and etcd peer listen. It answers even when the
cluster has lost quorum, to show which members are missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := cliout.ParseFormat(output)
			if err != nil {
				return &cliclient.Error{What: "invalid -o: " + err.Error(), Hint: "use -o table, json or yaml", Cause: err}
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			ms, err := client.ListMembers(cmd.Context())
			if err != nil {
				return err
			}
			return cliout.Printer{Format: format, Now: time.Now()}.Members(cmd.OutOrStdout(), ms)
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}

// newMemberCommand is `wasmorch member remove NAME`.
func newMemberCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "member",
		Short: "Manage control-plane members (remove)",
	}
	var server *string
	rm := &cobra.Command{
		Use:     "remove NAME|ID",
		Aliases: []string{"rm"},
		Short:   "Remove a control-plane member from the cluster",
		Long: `Remove a member from the cluster's etcd membership. The removed member's
process stops serving. Remove a member before you retire its machine, so that
the quorum is counted over the members that remain. A member that was added but
never started (a join that was cut short) has no name yet: remove it by the ID
'wasmorch members' shows.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cliclient.Errorf("e.g. 'wasmorch member remove cp3'", "member remove takes one member name or ID, got %d", len(args))
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			if err := client.RemoveMember(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "member %s removed\n", args[0])
			return nil
		},
	}
	server = addServerFlag(rm)
	cmd.AddCommand(rm)
	return cmd
}

// newSnapshotCommand is `wasmorch snapshot save|restore`.
func newSnapshotCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save the cluster's state to a file, or restore a data dir from one",
	}
	var server *string
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Write a consistent snapshot of the cluster's state to FILE",
		Long: `Write a consistent snapshot of everything the control plane stores (workloads,
instances, nodes, modules, events) to FILE, from the member you ask. The file
is etcd's snapshot format with its integrity hash.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cliclient.Errorf("e.g. 'wasmorch snapshot save backup.db'", "snapshot save takes one file name, got %d", len(args))
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			n, sum, err := client.SaveSnapshot(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved %s (%d bytes, %s)\n", args[0], n, sum)
			return nil
		},
	}
	server = addServerFlag(save)

	rc := controlplane.RestoreConfig{Name: hostname(), PeerAddr: controlplane.DefaultConfig().EtcdPeerAddr}
	restore := &cobra.Command{
		Use:   "restore FILE --data-dir DIR",
		Short: "Create a member's data dir from a snapshot",
		Long: `Create the data dir of a one-member cluster from a snapshot, without any
server running. Then start 'wasmorch server' (or 'up') on that data dir with
the same --name; other members join it afresh with --join. The restored
cluster has a new identity: members of the old cluster cannot rejoin it.`,
		Example: `  wasmorch snapshot restore backup.db --data-dir /var/lib/wasmorch --name cp1
  wasmorch server --data-dir /var/lib/wasmorch --name cp1`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cliclient.Errorf("e.g. 'wasmorch snapshot restore backup.db --data-dir DIR'", "snapshot restore takes one file name, got %d", len(args))
			}
			if rc.DataDir == "" {
				return cliclient.Errorf("e.g. --data-dir /var/lib/wasmorch", "snapshot restore needs --data-dir, the new member's data dir")
			}
			if _, err := os.Stat(args[0]); err != nil {
				return cliclient.Errorf("give the file 'wasmorch snapshot save' wrote", "cannot read snapshot %s: %v", args[0], err)
			}
			rc.Snapshot = args[0]
			if err := controlplane.RestoreSnapshot(rc); err != nil {
				return cliclient.Errorf("check the file and the data dir", "%v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s; start it with 'wasmorch server --data-dir %s --name %s'\n", args[0], rc.DataDir, rc.DataDir, rc.Name)
			return nil
		},
	}
	f := restore.Flags()
	f.StringVar(&rc.DataDir, "data-dir", "", "data dir of the restored member (must not hold a member yet)")
	f.StringVar(&rc.Name, "name", rc.Name, "name of the restored member (use it with 'server --name')")
	f.StringVar(&rc.PeerAddr, "peer", rc.PeerAddr, "etcd peer address HOST:PORT of the restored member (use it with 'server --peer')")
	cmd.AddCommand(save, restore)
	return cmd
}
