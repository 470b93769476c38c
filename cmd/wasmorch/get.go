package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/cliout"
)

// getKinds maps every name `get` accepts to the kind it lists.
var getKinds = map[string]string{
	"workloads": cliclient.KindWorkloads, "workload": cliclient.KindWorkloads, "wl": cliclient.KindWorkloads,
	"instances": cliclient.KindInstances, "instance": cliclient.KindInstances, "inst": cliclient.KindInstances,
	"nodes": cliclient.KindNodes, "node": cliclient.KindNodes,
	"events": cliclient.KindEvents, "event": cliclient.KindEvents, "ev": cliclient.KindEvents,
	"nodegroups": cliclient.KindNodeGroups, "nodegroup": cliclient.KindNodeGroups, "ng": cliclient.KindNodeGroups, // cloud (nodegroups.go)
}

// getOptions are get's flags.
type getOptions struct {
	output         string
	workload, node string
	states         []string
	selector       []string
	watch          bool
	chunk          int
}

func newGetCommand() *cobra.Command {
	var o getOptions
	var server *string
	cmd := &cobra.Command{
		Use:   "get workloads|instances|nodes|events|nodegroups [NAME]",
		Short: "List workloads, instances, nodes, events or node groups, and watch them change",
		Long: `List workloads, instances, nodes or events as a table, or with -o json as one JSON array
(-o yaml: the same objects in YAML). Lists are read a page at a time (--chunk-size) and
printed as the pages arrive. With -w, after the list, each change is printed as it happens
until Ctrl-C. Node groups (docs/cloud.md) are listed as the cloud controller last
recorded them, in one page, and cannot be watched.

Aliases: workload, wl; instance, inst; node; event, ev; nodegroup, ng.`,
		Example: `  wasmorch get workloads
  wasmorch get workloads hello
  wasmorch get instances --workload hello -o json
  wasmorch get instances --node edge-1 --state running,failed
  wasmorch get instances -w
  wasmorch get workloads -l app=web,tier!=db
  wasmorch get instances -l app=web -w
  wasmorch get nodes -l zone=a -o yaml
  wasmorch get events --workload hello -w
  wasmorch get nodegroups`,
		ValidArgs: []string{"workloads", "instances", "nodes", "events", "nodegroups"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || len(args) > 2 {
				return cliclient.Errorf("e.g. 'wasmorch get workloads'", "get takes what to list: workloads, instances, nodes, events or nodegroups, and for workloads a NAME")
			}
			kind, ok := getKinds[strings.ToLower(args[0])]
			if !ok {
				return cliclient.Errorf("use workloads, instances, nodes, events or nodegroups", "cannot get %q", args[0])
			}
			if kind == cliclient.KindNodeGroups {
				return getNodeGroups(cmd, *server, o, args[1:])
			}
			name := ""
			if len(args) == 2 {
				if kind != cliclient.KindWorkloads {
					return cliclient.Errorf("e.g. 'wasmorch get "+kind+"' (or 'wasmorch describe')", "get %s takes no NAME; only workloads are got by name", kind)
				}
				name = args[1]
			}
			if err := o.check(kind); err != nil {
				return err
			}
			wide := strings.EqualFold(o.output, "wide") // a table with more columns
			output := o.output
			if wide {
				output = string(cliout.Table)
			}
			format, err := cliout.ParseFormat(output)
			if err != nil {
				return &cliclient.Error{What: "invalid -o: " + err.Error(), Hint: "use -o table, wide, json or yaml", Cause: err}
			}
			var selector map[string]string
			labelSelector := strings.Join(o.selector, ",")
			if kind == cliclient.KindNodes {
				if selector, err = cliclient.ParseSelector(o.selector); err != nil {
					return cliclient.Errorf("use -l key=value[,key=value...]", "invalid -l: %v", err)
				}
				labelSelector = ""
			} else if err := cliclient.CheckLabelSelector(labelSelector); err != nil {
				return err
			}
			if _, err := cliclient.ParseStates(o.states); err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			ctx := cmd.Context()
			p := cliout.Printer{Format: format, Now: time.Now(), Wide: wide}
			g := &getter{client: client, o: o, kind: kind, name: name, selector: selector, labelSelector: labelSelector, s: p.NewStream(cmd.OutOrStdout(), o.watch)}
			err = g.run(ctx)
			if o.watch && ctx.Err() != nil {
				return nil // Ctrl-C ends a watch
			}
			return err
		},
	}
	server = addServerFlag(cmd)
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "table", "output format: table, wide, json or yaml")
	f.StringVar(&o.workload, "workload", "", "instances or events of this workload only")
	f.StringVar(&o.node, "node", "", "instances on this node, or events of this node, only")
	f.StringSliceVar(&o.states, "state", nil, "instances in one of these states only (Pending, Scheduled, Starting, Running, Succeeded, Failed, Lost, Stopped, Terminating; comma-separated or repeated)")
	f.StringSliceVarP(&o.selector, "selector", "l", nil, "workloads (or instances of workloads) whose labels match k=v, k!=v, k or !k (comma-separated: all must), or nodes carrying every label k=v, only")
	f.BoolVarP(&o.watch, "watch", "w", false, "after the list, print each change until Ctrl-C")
	f.IntVar(&o.chunk, "chunk-size", cliclient.DefaultChunkSize, fmt.Sprintf("objects per page of the list (1 to %d; 0: the server's default)", cliclient.MaxChunkSize))
	commandLineOnly(f, "workload", "node", "state", "selector", "watch")
	return cmd
}

// check refuses flags that do not apply to kind.
func (o getOptions) check(kind string) error {
	switch {
	case o.workload != "" && kind != cliclient.KindInstances && kind != cliclient.KindEvents:
		return cliclient.Errorf("use 'wasmorch get instances --workload "+o.workload+"' or 'wasmorch get workloads "+o.workload+"'", "--workload only applies to instances and events")
	case o.node != "" && kind != cliclient.KindInstances && kind != cliclient.KindEvents:
		return cliclient.Errorf("use 'wasmorch get instances --node "+o.node+"' or 'wasmorch describe node "+o.node+"'", "--node only applies to instances and events")
	case len(o.states) > 0 && kind != cliclient.KindInstances:
		return cliclient.Errorf("use 'wasmorch get instances --state ...'", "--state only applies to instances")
	case len(o.selector) > 0 && kind == cliclient.KindEvents:
		return cliclient.Errorf("use --workload or --node", "-l does not apply to events")
	case kind == cliclient.KindEvents && o.workload != "" && o.node != "":
		return cliclient.Errorf("give one of them", "get events follows one object: --workload or --node, not both")
	}
	return nil
}

// getter runs one get: the list, page by page, then (-w) its changes.
type getter struct {
	client   *cliclient.Client
	o        getOptions
	kind     string
	name     string
	selector map[string]string
	// labelSelector narrows workloads and instances by workload labels.
	labelSelector string
	s             *cliout.Stream
}

const added = "ADDED"

func (g *getter) run(ctx context.Context) error {
	rev, err := g.list(ctx)
	if err != nil {
		return err
	}
	if !g.o.watch {
		return g.s.Close()
	}
	spec := cliclient.WatchSpec{Kind: g.kind, Workload: g.o.workload, Node: g.o.node, Name: g.name, States: g.o.states, Selector: g.selector, LabelSelector: g.labelSelector}
	return g.client.Watch(ctx, spec, rev, g.list, func(ch cliclient.Change) error {
		g.s.SetNow(time.Now())
		switch {
		case ch.Workload != nil:
			return g.s.Workloads([]cliout.Workload{*ch.Workload}, ch.Type)
		case ch.Instance != nil:
			return g.s.Instances([]cliout.Instance{*ch.Instance}, ch.Type)
		case ch.Node != nil:
			return g.s.Nodes([]cliout.Node{*ch.Node}, ch.Type)
		case ch.Event != nil:
			return g.s.Events([]cliout.Event{*ch.Event}, ch.Type)
		}
		return nil
	})
}

// list prints every page of the list and returns its first page's
// revision, from which a watch misses nothing.
func (g *getter) list(ctx context.Context) (int64, error) {
	c, s, chunk := g.client, g.s, g.o.chunk
	switch g.kind {
	case cliclient.KindWorkloads:
		if g.name != "" {
			w, rev, err := c.WorkloadAt(ctx, g.name)
			if err != nil {
				return 0, err
			}
			return rev, s.Workloads([]cliout.Workload{w}, added)
		}
		return c.WorkloadPages(ctx, g.labelSelector, chunk, func(ws []cliout.Workload) error { return s.Workloads(ws, added) })
	case cliclient.KindInstances:
		f := cliclient.InstanceFilter{Workload: g.o.workload, Node: g.o.node, States: g.o.states, Selector: g.labelSelector}
		return c.InstancePages(ctx, f, chunk, func(is []cliout.Instance) error { return s.Instances(is, added) })
	case cliclient.KindNodes:
		return c.NodePages(ctx, g.selector, chunk, func(ns []cliout.Node) error { return s.Nodes(ns, added) })
	}
	object := ""
	switch {
	case g.o.workload != "":
		object = "workload/" + g.o.workload
	case g.o.node != "":
		object = "node/" + g.o.node
	}
	return c.EventPages(ctx, object, chunk, func(es []cliout.Event) error { return s.Events(es, added) })
}
