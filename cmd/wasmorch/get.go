package main

import (
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/cliout"
)

// getKinds maps every name `get` accepts to the kind it lists.
var getKinds = map[string]string{
	"workloads": "workloads", "workload": "workloads", "wl": "workloads",
	"instances": "instances", "instance": "instances", "inst": "instances",
	"nodes": "nodes", "node": "nodes",
}

func newGetCommand() *cobra.Command {
	var output, workload string
	var server *string
	cmd := &cobra.Command{
		Use:   "get workloads|instances|nodes",
		Short: "List workloads, instances or nodes",
		Long: `List workloads, instances or nodes as a table, or with -o json as one JSON array
(-o yaml: the same objects in YAML).

Aliases: workload, wl; instance, inst; node.`,
		Example: `  wasmorch get workloads
  wasmorch get instances --workload hello -o json
  wasmorch get nodes -o yaml`,
		ValidArgs: []string{"workloads", "instances", "nodes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cliclient.Errorf("e.g. 'wasmorch get workloads'", "get takes what to list: workloads, instances or nodes")
			}
			kind, ok := getKinds[strings.ToLower(args[0])]
			if !ok {
				return cliclient.Errorf("use workloads, instances or nodes", "cannot get %q", args[0])
			}
			wide := strings.EqualFold(output, "wide") // a table with more columns
			if wide {
				output = string(cliout.Table)
			}
			format, err := cliout.ParseFormat(output)
			if err != nil {
				return &cliclient.Error{What: "invalid -o: " + err.Error(), Hint: "use -o table, wide, json or yaml", Cause: err}
			}
			if workload != "" && kind != "instances" {
				return cliclient.Errorf("use 'wasmorch get instances --workload "+workload+"'", "--workload only applies to instances")
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			ctx, out := cmd.Context(), cmd.OutOrStdout()
			p := cliout.Printer{Format: format, Now: time.Now(), Wide: wide}
			switch kind {
			case "workloads":
				ws, err := client.ListWorkloads(ctx)
				if err != nil {
					return err
				}
				return p.Workloads(out, ws)
			case "instances":
				is, err := client.ListInstances(ctx, workload)
				if err != nil {
					return err
				}
				return p.Instances(out, is)
			default:
				ns, err := client.ListNodes(ctx)
				if err != nil {
					return err
				}
				return p.Nodes(out, ns)
			}
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, wide, json or yaml")
	cmd.Flags().StringVar(&workload, "workload", "", "only the instances of this workload")
	commandLineOnly(cmd.Flags(), "workload")
	return cmd
}
