package cliout

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"

	"github.com/wasmorch/wasmorch/internal/manifest"
)

// Stream prints one list as its pages arrive, so that a list of 200,000
// instances needs neither all of them in memory nor all of them before
// the first line: a table takes its column widths from its first page
// (a longer cell later pushes its row's next columns right), JSON is one
// array written an object at a time, YAML one list.
//
// A watch stream (`get -w`) prints each object with the change that
// brought it (ADDED for those listed first, then MODIFIED or DELETED):
// tables in an EVENT column first, as kubectl's --output-watch-events
// does; JSON as one {"type": ..., "object": ...} per line; YAML as one
// such document per change.
type Stream struct {
	p     Printer
	w     io.Writer
	watch bool

	header []string
	widths []int
	route  bool // workloads: the ROUTE column, decided by the first page
	ports  bool // workloads: the PORTS column, likewise
	count  int  // objects written
}

// NewStream starts printing one list (watch: and its changes) to w.
func (p Printer) NewStream(w io.Writer, watch bool) *Stream {
	return &Stream{p: p, w: w, watch: watch}
}

// SetNow sets the time AGE columns are measured against (a watch's rows
// come as time goes on).
func (s *Stream) SetNow(now time.Time) { s.p.Now = now }

// Workloads prints a page of workloads; event is the change that brought
// them (watch streams only).
func (s *Stream) Workloads(ws []Workload, event string) error {
	if s.p.Format == YAML {
		return writeManifests(s, ws, event)
	}
	if s.p.Format != Table {
		return writeObjects(s, ws, event)
	}
	if s.header == nil {
		s.route, s.ports = anyRoute(ws), anyTCP(ws)
	}
	rows := make([][]string, len(ws))
	for i, x := range ws {
		rows[i] = s.p.workloadRow(x, s.route, s.ports)
	}
	return s.table(workloadHeader(s.route, s.ports), rows, event)
}

// Instances prints a page of instances.
func (s *Stream) Instances(is []Instance, event string) error {
	if s.p.Format != Table {
		return writeObjects(s, is, event)
	}
	rows := make([][]string, len(is))
	for i, x := range is {
		rows[i] = s.p.instanceRow(x)
	}
	return s.table(instanceHeader(s.p.Wide), rows, event)
}

// Nodes prints a page of nodes.
func (s *Stream) Nodes(ns []Node, event string) error {
	if s.p.Format != Table {
		return writeObjects(s, ns, event)
	}
	rows := make([][]string, len(ns))
	for i, x := range ns {
		rows[i] = s.p.nodeRow(x)
	}
	return s.table(nodeHeader, rows, event)
}

// Events prints a page of events.
func (s *Stream) Events(es []Event, event string) error {
	if s.p.Format != Table {
		return writeObjects(s, es, event)
	}
	rows := make([][]string, len(es))
	for i, x := range es {
		rows[i] = s.p.eventRow(x)
	}
	return s.table(eventHeader, rows, event)
}

// Close ends the list: a JSON array's closing bracket, or [] for a JSON
// or YAML list that had no object.
func (s *Stream) Close() error {
	if s.watch || s.p.Format == Table {
		return nil
	}
	var err error
	switch {
	case s.count == 0:
		_, err = io.WriteString(s.w, "[]\n")
	case s.p.Format == JSON:
		_, err = io.WriteString(s.w, "\n]\n")
	}
	return err
}

// table writes rows under header, the header with the first page.
func (s *Stream) table(header []string, rows [][]string, event string) error {
	if s.watch {
		header = append([]string{"EVENT"}, header...)
		for i, r := range rows {
			rows[i] = append([]string{event}, r...)
		}
	}
	for _, r := range rows {
		for i, cell := range r {
			// A tab or newline in a cell (a node label, say) would break
			// the columns; nothing we print needs them.
			r[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(cell)
		}
	}
	if s.header == nil {
		s.header = header
		rows = append([][]string{header}, rows...)
		s.widths = make([]int, len(header))
		for _, r := range rows {
			for i, cell := range r {
				if i < len(s.widths) {
					s.widths[i] = max(s.widths[i], utf8.RuneCountInString(cell))
				}
			}
		}
		if s.watch {
			// Room for what later rows are likely to say.
			for i, h := range header {
				s.widths[i] = max(s.widths[i], watchWidths[h])
			}
		}
	}
	var b strings.Builder
	for _, r := range rows {
		writeRow(&b, r, s.widths)
	}
	s.count += len(rows)
	_, err := io.WriteString(s.w, b.String())
	return err
}

// watchWidths are the least widths of a watch table's columns: an
// instance's STATE is Scheduled when it is first seen and Running later.
var watchWidths = map[string]int{"EVENT": len("MODIFIED"), "STATE": len("Succeeded")}

// writeRow writes cells in columns of widths, three spaces apart (as
// text/tabwriter would align one page); the last cell is not padded.
func writeRow(b *strings.Builder, cells []string, widths []int) {
	for i, cell := range cells {
		b.WriteString(cell)
		if i == len(cells)-1 {
			break
		}
		pad := 3
		if i < len(widths) {
			pad += max(0, widths[i]-utf8.RuneCountInString(cell))
		}
		b.WriteString(strings.Repeat(" ", pad))
	}
	b.WriteByte('\n')
}

// change is one object of a watch stream, in JSON and YAML.
type change struct {
	Type   string `json:"type"`
	Object any    `json:"object"`
}

// writeObjects writes a page of objects in JSON or YAML.
func writeObjects[T any](s *Stream, objs []T, event string) error {
	var b strings.Builder
	for _, o := range objs {
		switch {
		case s.watch && s.p.Format == JSON:
			j, err := json.Marshal(change{Type: event, Object: o})
			if err != nil {
				return err
			}
			b.Write(j)
			b.WriteByte('\n')
		case s.watch:
			y, err := yaml.Marshal(change{Type: event, Object: o})
			if err != nil {
				return err
			}
			b.WriteString("---\n")
			b.Write(y)
		case s.p.Format == JSON:
			j, err := json.MarshalIndent(o, "  ", "  ")
			if err != nil {
				return err
			}
			if s.count == 0 {
				b.WriteString("[\n  ")
			} else {
				b.WriteString(",\n  ")
			}
			b.Write(j)
		default:
			// One item of a YAML list: "- " before its first line, two
			// spaces before the others.
			y, err := yaml.Marshal(o)
			if err != nil {
				return err
			}
			lines := strings.SplitAfter(strings.TrimSuffix(string(y), "\n"), "\n")
			for i, l := range lines {
				if i == 0 {
					b.WriteString("- ")
				} else {
					b.WriteString("  ")
				}
				b.WriteString(l)
			}
			b.WriteByte('\n')
		}
		s.count++
	}
	_, err := io.WriteString(s.w, b.String())
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// writeManifests writes a page of workloads in YAML as the manifests that
// apply takes back (manifest.FromWorkload): items of one list, or one
// {type, object} document per change.
func writeManifests(s *Stream, ws []Workload, event string) error {
	var b strings.Builder
	for _, w := range ws {
		o := manifest.FromWorkload(w.view())
		var doc any = o
		if s.watch {
			doc = struct {
				Type   string          `yaml:"type"`
				Object manifest.Object `yaml:"object"`
			}{event, o}
		}
		var y strings.Builder
		enc := yamlv3.NewEncoder(&y)
		enc.SetIndent(2)
		if err := enc.Encode(doc); err != nil {
			return err
		}
		if err := enc.Close(); err != nil {
			return err
		}
		if s.watch {
			b.WriteString("---\n")
			b.WriteString(y.String())
		} else {
			for i, l := range strings.SplitAfter(strings.TrimSuffix(y.String(), "\n"), "\n") {
				if i == 0 {
					b.WriteString("- ")
				} else {
					b.WriteString("  ")
				}
				b.WriteString(l)
			}
			b.WriteByte('\n')
		}
		s.count++
	}
	if _, err := io.WriteString(s.w, b.String()); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}
