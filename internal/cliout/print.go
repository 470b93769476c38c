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
	s := p.NewStream(w, false)
	if err := s.Workloads(ws, ""); err != nil {
		return err
	}
	return s.Close()
}

// Instances prints instances.
func (p Printer) Instances(w io.Writer, is []Instance) error {
	s := p.NewStream(w, false)
	if err := s.Instances(is, ""); err != nil {
		return err
	}
	return s.Close()
}

// Nodes prints nodes.
func (p Printer) Nodes(w io.Writer, ns []Node) error {
	s := p.NewStream(w, false)
	if err := s.Nodes(ns, ""); err != nil {
		return err
	}
	return s.Close()
}

// workloadHeader is the workload table's header; route adds ROUTE and
// IN-FLIGHT, ports PORTS (a plain TCP service's node port, as kubectl
// shows a service's: 9000/TCP).
func workloadHeader(route, ports bool) []string {
	// UP-TO-DATE counts the instances of the current generation, as
	// kubectl's does: below REPLICAS while a rollout goes on.
	h := []string{"NAME", "READY", "UP-TO-DATE", "REPLICAS", "GENERATION", "KIND", "AGE"}
	if route {
		h = append(h, "ROUTE", "IN-FLIGHT")
	}
	if ports {
		h = append(h, "PORTS")
	}
	return h
}

func (p Printer) workloadRow(x Workload, route, ports bool) []string {
	row := []string{
		x.Name,
		fmt.Sprintf("%d/%d", x.Ready, x.Replicas),
		strconv.Itoa(int(x.Current)),
		replicasCell(x),
		strconv.FormatInt(x.Generation, 10),
		dash(x.Kind),
		Age(p.Now, x.CreatedAt),
	}
	if route {
		inFlight := "-"
		if x.InFlight != nil {
			inFlight = strconv.FormatInt(*x.InFlight, 10)
		}
		row = append(row, dash(x.Route), inFlight)
	}
	if ports {
		cell := "-"
		if x.TCP {
			cell = fmt.Sprintf("%d/TCP", x.Port)
		}
		row = append(row, cell)
	}
	return row
}

// anyTCP says whether any workload is a plain TCP service: the PORTS
// column is shown only then.
func anyTCP(ws []Workload) bool {
	for _, x := range ws {
		if x.TCP {
			return true
		}
	}
	return false
}

// anyRoute says whether any workload is an HTTP function: the ROUTE
// column is shown only then, so that tables without functions keep
// their columns.
func anyRoute(ws []Workload) bool {
	for _, x := range ws {
		if x.Route != "" {
			return true
		}
	}
	return false
}

// instanceHeader is the instance table's header; wide adds RUNTIME, WHY
// (a fallback's reason) and MESSAGE.
func instanceHeader(wide bool) []string {
	h := []string{"ID", "WORKLOAD", "NODE", "STATE", "RESTARTS", "EXIT", "REASON", "AGE"}
	if wide {
		h = append(h, "RUNTIME", "WHY", "MESSAGE")
	}
	return h
}

func (p Printer) instanceRow(x Instance) []string {
	exit := "-"
	if x.ExitCode != nil {
		exit = strconv.Itoa(int(*x.ExitCode))
	}
	row := []string{
		x.ID,
		x.Workload,
		dash(x.Node),
		x.State,
		strconv.Itoa(int(x.Restarts)),
		exit,
		reasonCell(x),
		Age(p.Now, x.CreatedAt),
	}
	if p.Wide {
		row = append(row, dash(x.Runtime), dash(x.RuntimeReason), dash(x.Message))
	}
	return row
}

var nodeHeader = []string{"NAME", "STATE", "ARCH", "OS", "RUNTIMES", "INSTANCES", "LABELS", "AGE"}

func (p Printer) nodeRow(x Node) []string {
	return []string{
		x.Name,
		nodeState(x),
		dash(x.Arch),
		dash(x.OS),
		dash(strings.Join(x.Runtimes, ",")),
		strconv.Itoa(int(x.Instances)),
		dash(FormatLabels(x.Labels)),
		Age(p.Now, x.RegisteredAt),
	}
}

var eventHeader = []string{"AGE", "OBJECT", "REASON", "MESSAGE"}

func (p Printer) eventRow(x Event) []string {
	return []string{Age(p.Now, x.Time), x.Object, x.Reason, x.Message}
}

// encode writes v as indented JSON or as YAML.
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

// replicasCell is the replica count, and an autoscaled function's bounds:
// "1 (0..10)".
func replicasCell(x Workload) string {
	if x.MinReplicas != nil && x.MaxReplicas != nil {
		return fmt.Sprintf("%d (%d..%d)", x.Replicas, *x.MinReplicas, *x.MaxReplicas)
	}
	return strconv.Itoa(int(x.Replicas))
}
