package cliout

import (
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestPagesPrintAsOneList: a list printed page by page is, in JSON and
// YAML, byte for byte the list printed at once: one array.
func TestPagesPrintAsOneList(t *testing.T) {
	all := sampleInstances()
	for _, f := range []Format{JSON, YAML} {
		whole, err := json.MarshalIndent(all, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		want := string(whole) + "\n"
		if f == YAML {
			y, err := yaml.JSONToYAML(whole)
			if err != nil {
				t.Fatal(err)
			}
			want = string(y)
		}
		var b strings.Builder
		s := Printer{Format: f, Now: now}.NewStream(&b, false)
		for _, page := range [][]Instance{all[:1], all[1:3], nil, all[3:]} {
			if err := s.Instances(page, ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if b.String() != want {
			t.Errorf("-o %s in pages:\n%s\nwant:\n%s", f, b.String(), want)
		}
	}
}

// TestTablePagesKeepTheFirstPageColumns: later pages are aligned to the
// first page's columns; a longer cell pushes the rest of its row.
func TestTablePagesKeepTheFirstPageColumns(t *testing.T) {
	ns := sampleNodes()
	var b strings.Builder
	s := Printer{Format: Table, Now: now}.NewStream(&b, false)
	long := ns[0]
	long.Name = "a-much-longer-node-name"
	for _, page := range [][]Node{ns[:1], ns[1:], {long}} {
		if err := s.Nodes(page, ""); err != nil {
			t.Fatal(err)
		}
	}
	want := "" +
		"NAME   STATE   ARCH    OS      RUNTIMES         INSTANCES   LABELS   AGE\n" +
		"n1     Ready   amd64   linux   wasm,container   3           zone=a   -\n" +
		"n2     NotReady   arm64   linux   wasm             0           -        2d\n" +
		"a-much-longer-node-name   Ready   amd64   linux   wasm,container   3           zone=a   -\n"
	if b.String() != want {
		t.Errorf("table in pages:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestWatchStreamsSayWhatChanged: a watch's table leads with EVENT; its
// JSON is one {"type", "object"} per line.
func TestWatchStreamsSayWhatChanged(t *testing.T) {
	ws := sampleWorkloads()
	var b strings.Builder
	s := Printer{Format: Table, Now: now}.NewStream(&b, true)
	_ = s.Workloads(ws, "ADDED")
	_ = s.Workloads(ws[1:], "DELETED")
	want := "" +
		"EVENT      NAME    READY   UP-TO-DATE   REPLICAS   GENERATION   KIND   AGE\n" +
		"ADDED      hello   0/0     0            0          1            wasm   45s\n" +
		"ADDED      web     2/3     3            3          2            wasm   3h\n" +
		"DELETED    web     2/3     3            3          2            wasm   3h\n"
	if b.String() != want {
		t.Errorf("watch table:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	s = Printer{Format: JSON, Now: now}.NewStream(&b, true)
	_ = s.Workloads(ws, "ADDED")
	_ = s.Workloads(ws[:1], "MODIFIED")
	_ = s.Close()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("watch JSON:\n%s\nwant 3 lines", b.String())
	}
	for i, l := range lines {
		var c struct {
			Type   string         `json:"type"`
			Object map[string]any `json:"object"`
		}
		if err := json.Unmarshal([]byte(l), &c); err != nil || c.Object["name"] == nil {
			t.Errorf("line %d %q is not a change with an object: %v", i, l, err)
		}
		if want := []string{"ADDED", "ADDED", "MODIFIED"}[i]; c.Type != want {
			t.Errorf("line %d is %s, want %s", i, c.Type, want)
		}
	}
}
