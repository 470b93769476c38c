package cliout

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func diskPressureView() *wasmorchv1.NodeView {
	return &wasmorchv1.NodeView{Ready: true, Node: &wasmorchv1.Node{Name: "edge", Arch: "arm64", Os: "linux", Runtimes: []string{"wasm"},
		Conditions: []*wasmorchv1.NodeCondition{{
			Type:          wasmorchv1.NodeConditionType_NODE_CONDITION_TYPE_DISK_PRESSURE,
			Message:       "the disk holding /srv/w has 300 MiB free of 20 GiB, below the 1 GiB the worker keeps free",
			SinceUnixNano: ago(3 * time.Minute),
		}}}}
}

func TestANodeUnderDiskPressureSaysSo(t *testing.T) {
	p := Printer{Format: Table, Now: now}
	var b strings.Builder
	if err := p.Nodes(&b, Nodes([]*wasmorchv1.NodeView{diskPressureView()})); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "edge   Ready,DiskPressure ") {
		t.Errorf("get nodes:\n%s\nwant the state Ready,DiskPressure", b.String())
	}

	b.Reset()
	if err := p.DescribeNode(&b, DescribeNode(diskPressureView(), nil, nil)); err != nil {
		t.Fatal(err)
	}
	want := "DiskPressure: the disk holding /srv/w has 300 MiB free of 20 GiB, below the 1 GiB the worker keeps free (for 3m)"
	if !strings.Contains(strings.Join(strings.Fields(b.String()), " "), want) {
		t.Errorf("describe node:\n%s\nwant a line %q", b.String(), want)
	}

	b.Reset()
	if err := (Printer{Format: JSON, Now: now}).Nodes(&b, Nodes([]*wasmorchv1.NodeView{diskPressureView()})); err != nil {
		t.Fatal(err)
	}
	var nodes []struct {
		Conditions []struct{ Type, Message, Since string } `json:"conditions"`
	}
	if err := json.Unmarshal([]byte(b.String()), &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || len(nodes[0].Conditions) != 1 || nodes[0].Conditions[0].Type != "DiskPressure" || nodes[0].Conditions[0].Since == "" {
		t.Errorf("get nodes -o json:\n%s\nwant one condition of type DiskPressure, with its message and since", b.String())
	}
}

func TestDescribeNodeShowsReservedMemoryInHumanUnits(t *testing.T) {
	v := diskPressureView()
	v.Node.Capacity = &wasmorchv1.Resources{MemoryBytes: 24 << 30, CpuMillis: 2000, Instances: 110}
	v.Allocated = &wasmorchv1.Resources{MemoryBytes: 128 << 20, CpuMillis: 250, Instances: 3}
	var b strings.Builder
	if err := (Printer{Format: Table, Now: now}).DescribeNode(&b, DescribeNode(v, nil, nil)); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(strings.Fields(b.String()), " ")
	for _, want := range []string{"Memory: 128Mi of 24Gi reserved", "CPU: 250m of 2000m reserved", "Instances: 3 of 110 slots"} {
		if !strings.Contains(got, want) {
			t.Errorf("describe node:\n%s\nwant %q", b.String(), want)
		}
	}
}
