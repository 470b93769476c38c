package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/cliout"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// State (issue 14): named volumes (docs/storage.md).
func newVolumeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Manage named volumes: writable directories on a node that outlive instances",
		Long: `A named volume is a writable directory on one node that Wasm instances mount
(deploy --volume NAME:/PATH, or volumes: in a manifest). It is created on the node
where the first instance that mounts it is placed, and every later instance that
mounts it is placed there too. It outlives restarts, redeploys, rollouts and the
workload itself, until 'wasmorch volume rm'. A per-instance volume
(--volume NAME:/PATH,per-instance) is one per replica: NAME-WORKLOAD-0, -1, ...`,
	}
	cmd.AddCommand(newVolumeListCommand(), newVolumeDescribeCommand(), newVolumeRemoveCommand())
	return cmd
}

// volumeView is a volume as -o json and yaml print it.
type volumeView struct {
	Name       string    `json:"name" yaml:"name"`
	Node       string    `json:"node" yaml:"node"`
	UID        string    `json:"uid" yaml:"uid"`
	CreatedFor string    `json:"createdFor,omitempty" yaml:"createdFor,omitempty"`
	Created    time.Time `json:"created" yaml:"created"`
	Workloads  []string  `json:"workloads" yaml:"workloads"`
	// A per-instance volume: the replica slot of the workload it is for.
	Replica *replicaView `json:"replica,omitempty" yaml:"replica,omitempty"`
}

// replicaView is the replica slot a per-instance volume belongs to.
type replicaView struct {
	Workload string `json:"workload" yaml:"workload"`
	Volume   string `json:"volume" yaml:"volume"` // the name it mounts (--volume NAME:/PATH,per-instance)
	Ordinal  int32  `json:"ordinal" yaml:"ordinal"`
}

func volumeViewOf(v *v1.VolumeView) volumeView {
	vol := v.GetVolume()
	ws := v.GetWorkloads()
	if ws == nil {
		ws = []string{}
	}
	view := volumeView{Name: vol.GetName(), Node: vol.GetNode(), UID: vol.GetUid(), CreatedFor: vol.GetCreatedFor(),
		Created: time.Unix(0, vol.GetCreatedUnixNano()).UTC(), Workloads: ws}
	if vol.GetPerInstance() {
		view.Replica = &replicaView{Workload: vol.GetWorkload(), Volume: vol.GetMount(), Ordinal: vol.GetOrdinal()}
	}
	return view
}

func newVolumeListCommand() *cobra.Command {
	cmd := objectCommand("ls", "List named volumes, the node each lives on and the workloads that mount it", "  wasmorch volume ls", 0,
		func(cmd *cobra.Command, client *cliclient.Client, _ []string, format cliout.Format) error {
			vs, err := client.ListVolumes(cmd.Context())
			if err != nil {
				return err
			}
			if format != cliout.Table {
				views := make([]volumeView, 0, len(vs))
				for _, v := range vs {
					views = append(views, volumeViewOf(v))
				}
				return encodeAs(cmd.OutOrStdout(), format, views)
			}
			rows := [][]string{{"NAME", "NODE", "WORKLOADS", "AGE"}}
			now := time.Now()
			for _, v := range vs {
				users := strings.Join(v.GetWorkloads(), ",")
				if users == "" {
					users = "<none>"
				}
				rows = append(rows, []string{v.GetVolume().GetName(), v.GetVolume().GetNode(), users, cliout.Age(now, time.Unix(0, v.GetVolume().GetCreatedUnixNano()))})
			}
			return table(cmd.OutOrStdout(), rows)
		})
	cmd.Aliases = []string{"list"}
	return cmd
}

func newVolumeDescribeCommand() *cobra.Command {
	return objectCommand("describe NAME", "Show a named volume: its node, its directory there and the workloads that mount it", "  wasmorch volume describe data", 1,
		func(cmd *cobra.Command, client *cliclient.Client, args []string, format cliout.Format) error {
			v, err := client.GetVolume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			view := volumeViewOf(v)
			if format != cliout.Table {
				return encodeAs(cmd.OutOrStdout(), format, view)
			}
			users := strings.Join(view.Workloads, ", ")
			if users == "" {
				users = "<none>"
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Name:        %s\n", view.Name)
			fmt.Fprintf(out, "Node:        %s\n", view.Node)
			fmt.Fprintf(out, "Directory:   <worker data dir>/volumes/%s.%s\n", view.Name, view.UID)
			fmt.Fprintf(out, "Created:     %s (%s ago), for workload %s\n", view.Created.Format(time.RFC3339), cliout.Age(time.Now(), view.Created), view.CreatedFor)
			if r := view.Replica; r != nil {
				fmt.Fprintf(out, "Replica:     %d of workload %s (its per-instance volume %s)\n", r.Ordinal, r.Workload, r.Volume)
			}
			fmt.Fprintf(out, "Mounted by:  %s\n", users)
			return nil
		})
}

func newVolumeRemoveCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:     "rm NAME",
		Short:   "Remove a named volume that no workload mounts",
		Example: "  wasmorch volume rm data",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cliclient.Errorf("e.g. 'wasmorch volume rm data'", "volume rm takes 1 argument, got %d", len(args))
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			if err := client.DeleteVolume(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "volume/%s removed\n", args[0])
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}
