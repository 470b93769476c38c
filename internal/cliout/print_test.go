package cliout

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) int64 { return now.Add(-d).UnixNano() }

func sampleWorkloads() []Workload {
	return Workloads([]*wasmorchv1.WorkloadView{
		{Workload: &wasmorchv1.Workload{Name: "web", Generation: 2, CreatedUnixNano: ago(3 * time.Hour),
			Spec: &wasmorchv1.WorkloadSpec{Kind: "wasm", Replicas: 3, ModuleDigest: "sha256:ab", Env: []*wasmorchv1.EnvVar{{Name: "A", Value: "1"}}}},
			Ready: 2, Current: 3, Total: 4},
		{Workload: &wasmorchv1.Workload{Name: "hello", Generation: 1, CreatedUnixNano: ago(45 * time.Second),
			Spec: &wasmorchv1.WorkloadSpec{Kind: "wasm", Replicas: 0, Restart: wasmorchv1.RestartPolicy_RESTART_POLICY_NEVER}}},
	})
}

func sampleInstances() []Instance {
	return Instances([]*wasmorchv1.InstanceView{
		{
			Instance: &wasmorchv1.Instance{Id: "hello-ab12c", Workload: "hello", Generation: 1, Node: "n1", CreatedUnixNano: ago(5 * time.Minute)},
			Status:   &wasmorchv1.InstanceStatus{State: wasmorchv1.InstanceState_INSTANCE_STATE_FAILED, Restarts: 2, Exited: true, ExitCode: 3, Reason: "Error"},
			State:    wasmorchv1.InstanceState_INSTANCE_STATE_FAILED,
		},
		{
			Instance: &wasmorchv1.Instance{Id: "hello-zz999", Workload: "hello", Generation: 1, PendingReason: "no node is ready"},
		},
		{
			Instance: &wasmorchv1.Instance{Id: "hello-xy000", Workload: "hello", Generation: 1, Node: "n1"},
			Status:   &wasmorchv1.InstanceStatus{State: wasmorchv1.InstanceState_INSTANCE_STATE_SUCCEEDED, Exited: true, ExitCode: 0, Reason: "Completed"},
			State:    wasmorchv1.InstanceState_INSTANCE_STATE_SUCCEEDED,
		},
		{
			Instance: &wasmorchv1.Instance{Id: "hello-rr000", Workload: "hello", Generation: 1, Node: "n1"},
			Status:   &wasmorchv1.InstanceStatus{State: wasmorchv1.InstanceState_INSTANCE_STATE_RUNNING},
			State:    wasmorchv1.InstanceState_INSTANCE_STATE_RUNNING,
		},
	})
}

func sampleNodes() []Node {
	return Nodes([]*wasmorchv1.NodeView{
		{Node: &wasmorchv1.Node{Name: "n2", Arch: "arm64", Os: "linux", Runtimes: []string{"wasm"}, RegisteredUnixNano: ago(50 * time.Hour)}},
		{Node: &wasmorchv1.Node{Name: "n1", Arch: "amd64", Os: "linux", Runtimes: []string{"wasm", "container"}, Labels: map[string]string{"zone": "a"}},
			Ready: true, Instances: 3},
	})
}

func TestTablesAlignColumnsUnderHeaders(t *testing.T) {
	p := Printer{Format: Table, Now: now}
	var b strings.Builder
	if err := p.Workloads(&b, sampleWorkloads()); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"NAME    READY   UP-TO-DATE   REPLICAS   GENERATION   KIND   AGE\n" +
		"hello   0/0     0            0          1            wasm   45s\n" +
		"web     2/3     3            3          2            wasm   3h\n"
	if b.String() != want {
		t.Errorf("workloads table:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	if err := p.Instances(&b, sampleInstances()); err != nil {
		t.Fatal(err)
	}
	want = "" +
		"ID            WORKLOAD   NODE   STATE       RESTARTS   EXIT   REASON                            AGE\n" +
		"hello-ab12c   hello      n1     Failed      2          3      Error                             5m\n" +
		"hello-rr000   hello      n1     Running     0          -      -                                 -\n" +
		"hello-xy000   hello      n1     Succeeded   0          0      Completed                         -\n" +
		"hello-zz999   hello      -      Pending     0          -      Unschedulable: no node is ready   -\n"
	if b.String() != want {
		t.Errorf("instances table:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	if err := p.Nodes(&b, sampleNodes()); err != nil {
		t.Fatal(err)
	}
	want = "" +
		"NAME   STATE      ARCH    OS      RUNTIMES         INSTANCES   LABELS   AGE\n" +
		"n1     Ready      amd64   linux   wasm,container   3           zone=a   -\n" +
		"n2     NotReady   arm64   linux   wasm             0           -        2d\n"
	if b.String() != want {
		t.Errorf("nodes table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestJSONIsOneArrayWithTheContractFields(t *testing.T) {
	p := Printer{Format: JSON, Now: now}
	var b strings.Builder
	if err := p.Instances(&b, sampleInstances()); err != nil {
		t.Fatal(err)
	}
	var instances []map[string]any
	if err := json.Unmarshal([]byte(b.String()), &instances); err != nil {
		t.Fatalf("not one JSON array: %v\n%s", err, b.String())
	}
	if len(instances) != 4 {
		t.Fatalf("%d instances, want 4", len(instances))
	}
	for _, in := range instances {
		for _, k := range []string{"id", "workload", "node", "state", "restarts"} {
			if _, ok := in[k]; !ok {
				t.Errorf("instance %v has no %q", in["id"], k)
			}
		}
		_, hasExit := in["exitCode"]
		exited := in["state"] == "Failed" || in["state"] == "Succeeded"
		if hasExit != exited {
			t.Errorf("instance %v (state %v): exitCode present = %v", in["id"], in["state"], hasExit)
		}
	}
	if instances[0]["state"] != "Failed" || instances[0]["exitCode"] != float64(3) || instances[2]["exitCode"] != float64(0) {
		t.Errorf("instances = %v", instances)
	}

	b.Reset()
	if err := p.Workloads(&b, sampleWorkloads()); err != nil {
		t.Fatal(err)
	}
	var workloads []map[string]any
	if err := json.Unmarshal([]byte(b.String()), &workloads); err != nil {
		t.Fatal(err)
	}
	// hello has replicas 0 and ready 0: both must still be there.
	if workloads[0]["name"] != "hello" || workloads[0]["replicas"] != float64(0) || workloads[0]["ready"] != float64(0) || workloads[0]["restart"] != "never" {
		t.Errorf("workloads[0] = %v", workloads[0])
	}
	if workloads[1]["createdAt"] != "2026-11-27T09:00:00Z" {
		t.Errorf("createdAt = %v, want RFC 3339", workloads[1]["createdAt"])
	}

	b.Reset()
	if err := p.Nodes(&b, sampleNodes()); err != nil {
		t.Fatal(err)
	}
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(b.String()), &nodes); err != nil {
		t.Fatal(err)
	}
	if nodes[0]["name"] != "n1" || nodes[0]["state"] != "Ready" || nodes[1]["state"] != "NotReady" {
		t.Errorf("nodes = %v", nodes)
	}
}

func TestEmptyListsPrintAsEmptyArrays(t *testing.T) {
	for _, f := range []Format{JSON, YAML} {
		var b strings.Builder
		if err := (Printer{Format: f}).Workloads(&b, Workloads(nil)); err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(b.String()) != "[]" {
			t.Errorf("-o %s of nothing = %q, want []", f, b.String())
		}
	}
}

func TestYAMLHasTheSameObjectsAsJSON(t *testing.T) {
	var j, y strings.Builder
	_ = Printer{Format: JSON}.Nodes(&j, sampleNodes())
	_ = Printer{Format: YAML}.Nodes(&y, sampleNodes())
	fromYAML, err := yaml.YAMLToJSON([]byte(y.String()))
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	_ = json.Unmarshal([]byte(j.String()), &a)
	_ = json.Unmarshal(fromYAML, &b)
	aj, _ := json.Marshal(a)
	bj, _ := json.Marshal(b)
	if string(aj) != string(bj) {
		t.Errorf("YAML differs from JSON:\n%s\n%s", aj, bj)
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"": Table, "table": Table, "json": JSON, "JSON": JSON, "yaml": YAML} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseFormat("xml"); err == nil {
		t.Error("ParseFormat(xml) accepted it")
	}
}

func TestStateNamesAreCamelCase(t *testing.T) {
	want := map[wasmorchv1.InstanceState]string{
		wasmorchv1.InstanceState_INSTANCE_STATE_UNSPECIFIED: "Unknown",
		wasmorchv1.InstanceState_INSTANCE_STATE_PENDING:     "Pending",
		wasmorchv1.InstanceState_INSTANCE_STATE_SCHEDULED:   "Scheduled",
		wasmorchv1.InstanceState_INSTANCE_STATE_STARTING:    "Starting",
		wasmorchv1.InstanceState_INSTANCE_STATE_RUNNING:     "Running",
		wasmorchv1.InstanceState_INSTANCE_STATE_SUCCEEDED:   "Succeeded",
		wasmorchv1.InstanceState_INSTANCE_STATE_FAILED:      "Failed",
		wasmorchv1.InstanceState_INSTANCE_STATE_LOST:        "Lost",
		wasmorchv1.InstanceState_INSTANCE_STATE_STOPPED:     "Stopped",
		wasmorchv1.InstanceState_INSTANCE_STATE_TERMINATING: "Terminating",
	}
	for s := range wasmorchv1.InstanceState_name {
		st := wasmorchv1.InstanceState(s)
		if got := StateName(st); got != want[st] {
			t.Errorf("StateName(%v) = %q, want %q", st, got, want[st])
		}
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 90 * time.Second: "90s", 5 * time.Minute: "5m", 119 * time.Minute: "119m",
		3 * time.Hour: "3h", 47 * time.Hour: "47h", 72 * time.Hour: "3d", -time.Second: "0s",
	} {
		if got := Age(now, now.Add(-d)); got != want {
			t.Errorf("Age(%s) = %q, want %q", d, got, want)
		}
	}
	if Age(now, time.Time{}) != "-" {
		t.Error("unknown time is not -")
	}
}

func TestProgressRewritesOneLineOnATerminalAndPrintsChangesElsewhere(t *testing.T) {
	var term, plain strings.Builder
	pt, pp := NewProgress(&term, true), NewProgress(&plain, false)
	for _, s := range []string{"a: 0/2 ready", "a: 0/2 ready", "a: 1/2 ready", "a: 2/2 ready"} {
		pt.Update(s)
		pp.Update(s)
	}
	pt.Done()
	pp.Done()
	if want := "a: 0/2 ready\na: 1/2 ready\na: 2/2 ready\n"; plain.String() != want {
		t.Errorf("plain progress = %q, want %q", plain.String(), want)
	}
	if want := "\r\x1b[Ka: 0/2 ready\r\x1b[Ka: 1/2 ready\r\x1b[Ka: 2/2 ready\r\x1b[K"; term.String() != want {
		t.Errorf("terminal progress = %q, want %q", term.String(), want)
	}
}

// TestProgressBarOnATerminal: a step with a total draws a bar on a
// terminal and is plain text elsewhere.
func TestProgressBarOnATerminal(t *testing.T) {
	var term, plain strings.Builder
	pt, pp := NewProgress(&term, true), NewProgress(&plain, false)
	for _, s := range []Step{{Text: "a: 0/4 ready", Total: 4}, {Text: "a: 1/4 ready", Done: 1, Total: 4}, {Text: "a: 4/4 ready", Done: 4, Total: 4}, {Text: "no total"}} {
		pt.Show(s)
		pp.Show(s)
	}
	want := "\r\x1b[K[--------------------] a: 0/4 ready\r\x1b[K[#####---------------] a: 1/4 ready\r\x1b[K[####################] a: 4/4 ready\r\x1b[Kno total"
	if term.String() != want {
		t.Errorf("terminal progress = %q, want %q", term.String(), want)
	}
	if want := "a: 0/4 ready\na: 1/4 ready\na: 4/4 ready\nno total\n"; plain.String() != want {
		t.Errorf("plain progress = %q, want %q", plain.String(), want)
	}
}

// TestFunctionsShowBoundsAndRequestsInFlight: an autoscaled function's row
// shows its replica bounds and its requests in flight, in the table and in
// JSON; other workloads show "-" for in-flight and leave it out of JSON.
func TestFunctionsShowBoundsAndRequestsInFlight(t *testing.T) {
	ws := Workloads([]*wasmorchv1.WorkloadView{
		{Workload: &wasmorchv1.Workload{Name: "greet", Generation: 1, CreatedUnixNano: ago(time.Minute),
			Spec: &wasmorchv1.WorkloadSpec{Kind: "wasm", Replicas: 1, Http: &wasmorchv1.HttpTrigger{Route: "/greet"},
				Autoscale: &wasmorchv1.Autoscale{MinReplicas: 0, MaxReplicas: 10}}},
			Ready: 1, Current: 1, Total: 1, InFlight: 7},
		{Workload: &wasmorchv1.Workload{Name: "ticker", Generation: 1, CreatedUnixNano: ago(time.Minute),
			Spec: &wasmorchv1.WorkloadSpec{Kind: "wasm", Replicas: 2}}},
	})
	var b strings.Builder
	if err := (Printer{Format: Table, Now: now}).Workloads(&b, ws); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if !strings.Contains(lines[0], "IN-FLIGHT") {
		t.Fatalf("no IN-FLIGHT column:\n%s", b.String())
	}
	greet, ticker := strings.Fields(lines[1]), strings.Fields(lines[2])
	if !strings.Contains(lines[1], "1 (0..10)") || greet[len(greet)-1] != "7" || greet[len(greet)-2] != "/greet" {
		t.Errorf("greet's row: %q, want replicas 1 (0..10), route /greet, 7 in flight", lines[1])
	}
	if ticker[len(ticker)-1] != "-" {
		t.Errorf("ticker's row: %q, want - in flight", lines[2])
	}
	b.Reset()
	if err := (Printer{Format: JSON, Now: now}).Workloads(&b, ws); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil {
		t.Fatal(err)
	}
	if got[0]["inFlight"] != float64(7) {
		t.Errorf("greet's JSON inFlight = %v, want 7", got[0]["inFlight"])
	}
	if _, ok := got[1]["inFlight"]; ok {
		t.Errorf("ticker's JSON has inFlight: %v", got[1])
	}
}

// TestTCPServicesShowTheirPort: a PORTS column appears when a workload is
// a plain TCP service (its node port, as kubectl shows 9000/TCP), "-" for
// the others; without one, the table keeps its columns.
func TestTCPServicesShowTheirPort(t *testing.T) {
	plain := &wasmorchv1.WorkloadView{Workload: &wasmorchv1.Workload{Name: "plain", Generation: 1, CreatedUnixNano: ago(time.Minute),
		Spec: &wasmorchv1.WorkloadSpec{Kind: "wasm", Replicas: 2, Port: 9000, Tcp: true}}}
	ticker := &wasmorchv1.WorkloadView{Workload: &wasmorchv1.Workload{Name: "ticker", Generation: 1, CreatedUnixNano: ago(time.Minute),
		Spec: &wasmorchv1.WorkloadSpec{Kind: "wasm", Replicas: 2}}}
	var b strings.Builder
	if err := (Printer{Format: Table, Now: now}).Workloads(&b, Workloads([]*wasmorchv1.WorkloadView{plain, ticker})); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if h := strings.Fields(lines[0]); h[len(h)-1] != "PORTS" {
		t.Fatalf("no PORTS column:\n%s", b.String())
	}
	if p, tk := strings.Fields(lines[1]), strings.Fields(lines[2]); p[len(p)-1] != "9000/TCP" || tk[len(tk)-1] != "-" {
		t.Errorf("rows:\n%s\nwant 9000/TCP for plain, - for ticker", b.String())
	}
	b.Reset()
	if err := (Printer{Format: Table, Now: now}).Workloads(&b, Workloads([]*wasmorchv1.WorkloadView{ticker})); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "PORTS") {
		t.Errorf("a PORTS column without a TCP service:\n%s", b.String())
	}
}
