package main

import (
	"net"
	"strings"
	"testing"
)

func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

// TestFailuresAreOneLineSayingWhatToDo runs commands that fail before any
// server is needed (or because none answers).
func TestFailuresAreOneLineSayingWhatToDo(t *testing.T) {
	isolate(t)
	server := closedAddr(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"deploy", "../../testdata/garbage.wasm"}, "error: ../../testdata/garbage.wasm is not a valid WebAssembly module: "},
		{[]string{"deploy", "../../testdata/hello.wasm", "--name", "Hello_World"}, `error: invalid --name: "Hello_World"`},
		{[]string{"deploy", "../../testdata/hello.wasm", "--replicas", "-1"}, "error: invalid --replicas -1; "},
		{[]string{"deploy", "../../testdata/hello.wasm", "--memory", "lots"}, `error: invalid --memory: "lots" is not a size; `},
		{[]string{"deploy", "a.wasm", "b.wasm"}, "error: deploy takes one module file, got 2; "},
		{[]string{"deploy", "../../testdata/hello.wasm", "--replicas", "x"}, `error: invalid argument "x" for "--replicas" flag: `},
		{[]string{"deploy", "../../testdata/hello.wasm", "--server", server}, "error: cannot reach the wasmorch server at " + server + " (connection refused); "},
		{[]string{"get", "workloads", "--server", server}, "error: cannot reach the wasmorch server at "},
		{[]string{"get", "things"}, `error: cannot get "things"; `},
		{[]string{"scale", "hello"}, "error: scale needs --replicas N; "},
		{[]string{"logs"}, "error: logs takes one workload name, got 0; "},
		{[]string{"deplyo"}, `error: unknown command "deplyo"; did you mean 'wasmorch deploy'?`},
		{[]string{"get", "--bogus"}, "error: unknown flag: --bogus; see 'wasmorch get --help'"},
		{[]string{"up", "--log-level", "loud"}, `error: invalid --log-level "loud"; `},
		{[]string{"up", "--api", "nonsense"}, "error: invalid settings: api address"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := run(tc.args, &stdout, &stderr)
			if code == 0 {
				t.Fatalf("exit 0, want non-zero; stdout %q", stdout.String())
			}
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) || !strings.Contains(lines[0], "; ") {
				t.Errorf("stderr = %q, want one line starting %q with a hint after '; '", stderr.String(), tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
		})
	}
}

func TestVersionDoesNotFailWithoutAServer(t *testing.T) {
	isolate(t)
	var stdout, stderr strings.Builder
	if code := run([]string{"version", "--server", closedAddr(t)}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "client: ") || !strings.Contains(stdout.String(), "server: unknown (cannot reach") {
		t.Errorf("stdout = %q", stdout.String())
	}
}

func TestParseLabels(t *testing.T) {
	got, err := parseLabels([]string{"zone=a,rack=r1", "gpu="})
	if err != nil || len(got) != 3 || got["zone"] != "a" || got["rack"] != "r1" || got["gpu"] != "" {
		t.Errorf("parseLabels = %v, %v", got, err)
	}
	for _, bad := range []string{"novalue", "=x"} {
		if _, err := parseLabels([]string{bad}); err == nil {
			t.Errorf("parseLabels(%q) accepted it", bad)
		}
	}
}

func TestDialableTurnsWildcardsIntoLoopback(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:7070":   "127.0.0.1:7070",
		"[::]:7070":      "127.0.0.1:7070",
		":7070":          "127.0.0.1:7070",
		"10.0.0.5:7070":  "10.0.0.5:7070",
		"127.0.0.1:7070": "127.0.0.1:7070",
	} {
		if got := dialable(in); got != want {
			t.Errorf("dialable(%q) = %q, want %q", in, got, want)
		}
	}
}
