package cliout

import (
	"fmt"
	"io"
	"strconv"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// InstanceUsage is one instance as `top instances` shows it.
type InstanceUsage struct {
	ID               string `json:"id"`
	Workload         string `json:"workload"`
	Node             string `json:"node"`
	CPUMillis        int64  `json:"cpuMillis"`
	MemoryBytes      int64  `json:"memoryBytes"`
	MemoryLimitBytes int64  `json:"memoryLimitBytes"`
	// Unmeasured is set for an instance its worker does not measure (a
	// function's replica, or one not running now); Error says why its node
	// could not be asked.
	Unmeasured bool   `json:"unmeasured,omitempty"`
	Error      string `json:"error,omitempty"`
}

// NodeUsage is one node as `top nodes` shows it.
type NodeUsage struct {
	Name              string `json:"name"`
	CPUMillis         int64  `json:"cpuMillis"`
	MemoryBytes       int64  `json:"memoryBytes"`
	CPUCapacityMillis int64  `json:"cpuCapacityMillis,omitempty"`
	MemoryCapacity    int64  `json:"memoryCapacityBytes,omitempty"`
	WindowMillis      int64  `json:"windowMillis"`
	Error             string `json:"error,omitempty"`
}

// NodeUsageFrom builds the view of one node's report.
func NodeUsageFrom(r *wasmorchv1.UsageReport) NodeUsage {
	return NodeUsage{Name: r.GetNode(), CPUMillis: r.GetCpuMillis(), MemoryBytes: r.GetMemoryBytes(),
		CPUCapacityMillis: r.GetCapacity().GetCpuMillis(), MemoryCapacity: r.GetCapacity().GetMemoryBytes(),
		WindowMillis: r.GetWindowMs(), Error: r.GetError()}
}

// InstanceUsagesFrom builds the views of a node's instances.
func InstanceUsagesFrom(r *wasmorchv1.UsageReport) []InstanceUsage {
	out := make([]InstanceUsage, 0, len(r.GetInstances()))
	for _, u := range r.GetInstances() {
		out = append(out, InstanceUsage{ID: u.GetId(), Workload: u.GetWorkload(), Node: r.GetNode(), CPUMillis: u.GetCpuMillis(),
			MemoryBytes: u.GetMemoryBytes(), MemoryLimitBytes: u.GetMemoryLimitBytes(), Unmeasured: u.GetUnmeasured(), Error: r.GetError()})
	}
	return out
}

// TopInstances prints what instances use.
func (p Printer) TopInstances(w io.Writer, us []InstanceUsage) error {
	if p.Format != Table {
		if us == nil {
			us = []InstanceUsage{}
		}
		return p.encode(w, us)
	}
	rows := [][]string{{"ID", "WORKLOAD", "NODE", "CPU", "MEMORY", "LIMIT"}}
	for _, u := range us {
		cpu, mem := strconv.FormatInt(u.CPUMillis, 10)+"m", HumanBytes(u.MemoryBytes)
		limit := HumanBytes(u.MemoryLimitBytes)
		switch {
		case u.Error != "":
			cpu, mem, limit = "-", "-", "- ("+u.Error+")"
		case u.Unmeasured:
			cpu, mem = "-", "-"
		}
		rows = append(rows, []string{u.ID, u.Workload, u.Node, cpu, mem, limit})
	}
	return writeTable(w, rows)
}

// TopNodes prints what nodes use; a node that could not be asked says
// why.
func (p Printer) TopNodes(w io.Writer, ns []NodeUsage) error {
	if p.Format != Table {
		if ns == nil {
			ns = []NodeUsage{}
		}
		return p.encode(w, ns)
	}
	rows := [][]string{{"NAME", "CPU", "CPU%", "MEMORY", "MEMORY%"}}
	for _, n := range ns {
		if n.Error != "" {
			rows = append(rows, []string{n.Name, "-", "-", "-", "- (" + n.Error + ")"})
			continue
		}
		rows = append(rows, []string{n.Name, strconv.FormatInt(n.CPUMillis, 10) + "m", percent(n.CPUMillis, n.CPUCapacityMillis),
			HumanBytes(n.MemoryBytes), percent(n.MemoryBytes, n.MemoryCapacity)})
	}
	return writeTable(w, rows)
}

func percent(n, of int64) string {
	if of <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", float64(n)*100/float64(of))
}
