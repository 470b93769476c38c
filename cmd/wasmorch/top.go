package main

import (
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/cliout"
)

func newTopCommand() *cobra.Command {
	var (
		server   *string
		output   string
		f        cliclient.TopFilter
		selector []string
	)
	cmd := &cobra.Command{
		Use:   "top instances|nodes",
		Short: "Show the CPU and memory instances or nodes use, as their workers measure it",
		Long: `Show what instances (or nodes) use now, as their workers measure it: CPU in
millicores averaged over the last second or so (a wasm instance's is the time its
guest ran rather than slept), memory in bytes (a wasm instance's linear memory; a
container's cgroup; a node's: the worker process and its containers). An HTTP
function's replica runs each request in a sandbox of its own and shows '-', as
does an instance not running now; one whose node cannot be asked says why.`,
		Example: `  wasmorch top nodes
  wasmorch top instances --workload web
  wasmorch top instances -l app=shop -o json`,
		ValidArgs: []string{"instances", "nodes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cliclient.Errorf("e.g. 'wasmorch top nodes'", "top takes what to show: instances or nodes")
			}
			switch strings.ToLower(args[0]) {
			case "instances", "instance", "inst":
			case "nodes", "node":
				f.Nodes = true
			default:
				return cliclient.Errorf("use instances or nodes", "cannot top %q", args[0])
			}
			f.Selector = strings.Join(selector, ",")
			if f.Nodes && (f.Workload != "" || f.Selector != "") {
				return cliclient.Errorf("use 'wasmorch top instances'", "--workload and -l narrow instances, not nodes")
			}
			format, err := cliout.ParseFormat(output)
			if err != nil {
				return &cliclient.Error{What: "invalid -o: " + err.Error(), Hint: "use -o table, json or yaml", Cause: err}
			}
			if err := cliclient.CheckLabelSelector(f.Selector); err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			insts, nodes, err := client.Top(cmd.Context(), f)
			if err != nil {
				return err
			}
			p := cliout.Printer{Format: format, Now: time.Now()}
			if f.Nodes {
				return p.TopNodes(cmd.OutOrStdout(), nodes)
			}
			return p.TopInstances(cmd.OutOrStdout(), insts)
		},
	}
	server = addServerFlag(cmd)
	fl := cmd.Flags()
	fl.StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	fl.StringVar(&f.Workload, "workload", "", "instances of this workload only")
	fl.StringVar(&f.Node, "node", "", "instances on this node, or this node, only")
	fl.StringSliceVarP(&selector, "selector", "l", nil, "instances of workloads whose labels match k=v, k!=v, k or !k (comma-separated) only")
	commandLineOnly(fl, "workload", "node", "selector")
	return cmd
}
