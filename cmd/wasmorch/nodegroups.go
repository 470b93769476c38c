package main

import (
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/cliout"
)

// getNodeGroups is `get nodegroups`: the node groups as the leader's cloud
// controller last recorded them (docs/cloud.md), in one page.
func getNodeGroups(cmd *cobra.Command, server string, o getOptions, names []string) error {
	switch {
	case len(names) > 0:
		return cliclient.Errorf("use 'wasmorch get nodegroups'", "get nodegroups takes no NAME")
	case o.watch:
		return cliclient.Errorf("run 'wasmorch get nodegroups' again, or watch the groups' events with 'wasmorch get events -w'", "node groups cannot be watched")
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
	gs, err := client.ListNodeGroups(cmd.Context())
	if err != nil {
		return err
	}
	return cliout.Printer{Format: format, Now: time.Now()}.NodeGroups(cmd.OutOrStdout(), gs)
}
