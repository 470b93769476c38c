package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/cliout"
)

// getNodeGroups is `get nodegroups [-w]`: the node groups as the leader's
// cloud controller last recorded them (docs/cloud.md), in one page, then
// (-w) each change of a group's status as the controller records it.
func getNodeGroups(cmd *cobra.Command, server string, o getOptions, names []string) error {
	switch {
	case len(names) > 0:
		return cliclient.Errorf("use 'wasmorch get nodegroups' or 'wasmorch describe nodegroup "+names[0]+"'", "get nodegroups takes no NAME")
	case o.workload != "" || o.node != "" || len(o.states) > 0 || len(o.selector) > 0:
		return cliclient.Errorf("use 'wasmorch get nodes -l node-group=NAME' for a group's nodes", "--workload, --node, --state and -l do not apply to node groups")
	}
	output := o.output
	if strings.EqualFold(output, "wide") {
		output = string(cliout.Table)
	}
	format, err := cliout.ParseFormat(output)
	if err != nil {
		return &cliclient.Error{What: "invalid -o: " + err.Error(), Hint: "use -o table, wide, json or yaml", Cause: err}
	}
	client, err := dial(cmd, server)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx := cmd.Context()
	if !o.watch {
		gs, err := client.ListNodeGroups(ctx)
		if err != nil {
			return err
		}
		return cliout.Printer{Format: format, Now: time.Now()}.NodeGroups(cmd.OutOrStdout(), gs)
	}
	s := cliout.Printer{Format: format, Now: time.Now()}.NewStream(cmd.OutOrStdout(), true)
	list := func(ctx context.Context) (int64, error) {
		gs, rev, err := client.NodeGroupsAt(ctx)
		if err != nil {
			return 0, err
		}
		return rev, s.NodeGroups(gs, added)
	}
	rev, err := list(ctx)
	if err != nil {
		return err
	}
	err = client.Watch(ctx, cliclient.WatchSpec{Kind: cliclient.KindNodeGroups}, rev, list, func(ch cliclient.Change) error {
		if ch.NodeGroup == nil {
			return nil
		}
		s.SetNow(time.Now())
		return s.NodeGroups([]cliout.NodeGroup{*ch.NodeGroup}, ch.Type)
	})
	if ctx.Err() != nil {
		return nil // Ctrl-C ends a watch
	}
	return err
}

// describeNodeGroup is `describe nodegroup NAME`: the group, its nodes with
// their provider ids and states beside the cluster's, and its events (its
// controller's decisions).
func describeNodeGroup(cmd *cobra.Command, server string, format cliout.Format, name string) error {
	client, err := dial(cmd, server)
	if err != nil {
		return err
	}
	defer client.Close()
	d, err := client.DescribeNodeGroup(cmd.Context(), name)
	if err != nil {
		return err
	}
	return cliout.Printer{Format: format, Now: time.Now()}.DescribeNodeGroup(cmd.OutOrStdout(), name, d)
}
