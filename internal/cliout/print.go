package cliout

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"
)

// Format is an output format of the get commands.
type Format string

// The formats `-o` accepts.
const (
	Table Format = "table"
	JSON  Format = "json"
	YAML  Format = "yaml"
)

// ParseFormat parses an -o value; empty means table.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case "", Table:
		return Table, nil
	case JSON, YAML:
		return f, nil
	}
	return "", fmt.Errorf("%q is not an output format", s)
}

// Printer writes lists of views in one format. Now is the time AGE
// columns are measured against.
type Printer struct {
	Format Format
	Now    time.Time
	// Wide adds columns to tables (-o wide): an instance's runtime and
	// the message that explains its reason.
	Wide bool
}

// Workloads prints workloads.
func (p Printer) Workloads(w io.Writer, ws []Workload) error {
	if p.Format != Table {
		return p.encode(w, ws)
	}
	// UP-TO-DATE counts the instances of the current generation, as
	// kubectl's does: below REPLICAS while a rollout goes on.
	rows := [][]string{{"NAME", "READY", "UP-TO-DATE", "REPLICAS", "GENERATION", "KIND", "AGE"}}
	for _, x := range ws {
		rows = append(rows, []string{
			x.Name,
			fmt.Sprintf("%d/%d", x.Ready, x.Replicas),
			strconv.Itoa(int(x.Current)),
			replicasCell(x),
			strconv.FormatInt(x.Generation, 10),
			dash(x.Kind),
			Age(p.Now, x.CreatedAt),
		})
	}
	addRouteColumn(rows, ws)
	return writeTable(w, rows)
}

// Instances prints instances.
func (p Printer) Instances(w io.Writer, is []Instance) error {
	if p.Format != Table {
		return p.encode(w, is)
	}
	rows := [][]string{{"ID", "WORKLOAD", "NODE", "STATE", "RESTARTS", "EXIT", "REASON", "AGE"}}
	for _, x := range is {
		exit := "-"
		if x.ExitCode != nil {
			exit = strconv.Itoa(int(*x.ExitCode))
		}
		rows = append(rows, []string{
			x.ID,
			x.Workload,
			dash(x.Node),
			x.State,
			strconv.Itoa(int(x.Restarts)),
			exit,
			reasonCell(x),
			Age(p.Now, x.CreatedAt),
		})
	}
	if p.Wide {
		addWideInstanceColumns(rows, is)
	}
	return writeTable(w, rows)
}

// addWideInstanceColumns adds RUNTIME, WHY (a fallback's reason) and
// MESSAGE to an instance table.
func addWideInstanceColumns(rows [][]string, is []Instance) {
	rows[0] = append(rows[0], "RUNTIME", "WHY", "MESSAGE")
	for i, x := range is {
		rows[i+1] = append(rows[i+1], dash(x.Runtime), dash(x.RuntimeReason), dash(x.Message))
	}
}

// Nodes prints nodes.
func (p Printer) Nodes(w io.Writer, ns []Node) error {
	if p.Format != Table {
		return p.encode(w, ns)
	}
	rows := [][]string{{"NAME", "STATE", "ARCH", "OS", "RUNTIMES", "INSTANCES", "LABELS", "AGE"}}
	for _, x := range ns {
		rows = append(rows, []string{
			x.Name,
			nodeState(x),
			dash(x.Arch),
			dash(x.OS),
			dash(strings.Join(x.Runtimes, ",")),
			strconv.Itoa(int(x.Instances)),
			dash(FormatLabels(x.Labels)),
			Age(p.Now, x.RegisteredAt),
		})
	}
	return writeTable(w, rows)
}

// encode writes v, a slice of views, as one JSON array or one YAML list.
func (p Printer) encode(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if p.Format == YAML {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
	} else {
		b = append(b, '\n')
	}
	_, err = w.Write(b)
	return err
}

func writeTable(w io.Writer, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	for _, r := range rows {
		for i, cell := range r {
			// A tab or newline in a cell (a node label, say) would break the
			// columns; nothing we print needs them.
			r[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(cell)
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// reasonCell is an instance's REASON column: why a Pending one waits, or
// the reason of its last state.
func reasonCell(x Instance) string {
	if x.Reason == "Unschedulable" && x.Message != "" {
		return "Unschedulable: " + x.Message
	}
	return dash(x.Reason)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Age is how long ago t was, in the short form kubectl uses: 45s, 12m,
// 5h, 3d; "-" when t is unknown.
func Age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// addRouteColumn appends a ROUTE column to the workload rows when any
// workload is an HTTP function, so that tables without functions keep
// their columns.
func addRouteColumn(rows [][]string, ws []Workload) {
	for _, x := range ws {
		if x.Route != "" {
			rows[0] = append(rows[0], "ROUTE", "IN-FLIGHT")
			for i, x := range ws {
				inFlight := "-"
				if x.InFlight != nil {
					inFlight = strconv.FormatInt(*x.InFlight, 10)
				}
				rows[i+1] = append(rows[i+1], dash(x.Route), inFlight)
			}
			return
		}
	}
}

// replicasCell is the replica count, and an autoscaled function's bounds:
// "1 (0..10)".
func replicasCell(x Workload) string {
	if x.MinReplicas != nil && x.MaxReplicas != nil {
		return fmt.Sprintf("%d (%d..%d)", x.Replicas, *x.MinReplicas, *x.MaxReplicas)
	}
	return strconv.Itoa(int(x.Replicas))
}
