package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// scrape reads the member's /metrics into name{labels} → value, labels
// as the exposition format prints them (sorted by name).
func (c *cluster) scrape() map[string]float64 {
	c.t.Helper()
	return scrape(c.t, c.metrics)
}

// scrape reads GET /metrics at addr as (*cluster).scrape does.
func scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

// TestMetricsEventsAndTopAfterRealWork: requests to a function, a crash loop and
// a running service show in the member's metrics by name and value, the
// crash loop records a rate-limited BackOff event, and top reports what
// a ticker uses (its one page of linear memory).
func TestMetricsEventsAndTopAfterRealWork(t *testing.T) {
	c := startUp(t)
	c.mustRun("deploy", "testdata/greet.wasm", "--name", "greet", "--route", "/greet", "--env", "GREETING=hi")
	c.waitRouted("/greet", "")
	for i := range 3 {
		resp, err := http.Get("http://" + c.http + "/greet?who=e2e")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "ticker")
	c.mustRun("deploy", "testdata/fail.wasm", "--name", "crashy", "--no-wait")
	// A function scaled to zero: its first request is a cold start.
	c.mustRun("deploy", "testdata/greet.wasm", "--name", "cold", "--route", "/cold", "--replicas", "0", "--min-replicas", "0", "--max-replicas", "1")
	// The gateway learns the route from its cache: until then, 404 (and
	// no metrics, no wake-up).
	eventually(t, "a cold request answered", func() (bool, string) {
		resp, err := http.Get("http://" + c.http + "/cold?who=e2e")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusOK {
			t.Fatalf("a cold request: %d %s", resp.StatusCode, b)
		}
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("%d %s", resp.StatusCode, b)
	})

	var m map[string]float64
	eventually(t, "the metrics of the requests, the workloads and the node", func() (bool, string) {
		m = c.scrape()
		for key, want := range map[string]float64{
			`wasmorch_function_requests_total{code="200",generation="1",route="/greet",workload="greet"}`:      3,
			`wasmorch_function_request_duration_seconds_count{generation="1",route="/greet",workload="greet"}`: 3,
			`wasmorch_function_requests_in_flight{route="/greet",workload="greet"}`:                            0,
			`wasmorch_workload_replicas{workload="ticker"}`:                                                    1,
			`wasmorch_workload_instances{state="Running",workload="ticker"}`:                                   1,
			`wasmorch_workload_instances_ready{workload="greet"}`:                                              1,
			`wasmorch_node_ready{node="e2e-node"}`:                                                             1,
			`wasmorch_function_cold_starts_total{route="/cold",workload="cold"}`:                               1,
			`wasmorch_function_cold_start_duration_seconds_count{route="/cold",workload="cold"}`:               1,
		} {
			if got, ok := m[key]; !ok || got != want {
				return false, fmt.Sprintf("%s = %v (present %v), want %v", key, got, ok, want)
			}
		}
		if m[`wasmorch_workload_restarts{workload="crashy"}`] < 2 || m[`wasmorch_worker_instance_restarts_total{workload="crashy"}`] < 2 {
			return false, "crashy has not restarted twice yet"
		}
		if age, ok := m[`wasmorch_node_heartbeat_age_seconds{node="e2e-node"}`]; !ok || age > 30 {
			return false, fmt.Sprintf("heartbeat age %v", age)
		}
		if m["wasmorch_scheduler_placements_total"] < 3 {
			return false, "placements"
		}
		return true, ""
	})
	// Every metric the Grafana dashboard in docs/ queries exists.
	dash, err := os.ReadFile(filepath.Join(repoRoot, "docs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for key := range m {
		name, _, _ := strings.Cut(key, "{")
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			name = strings.TrimSuffix(name, suffix)
		}
		names[name] = true
	}
	for _, used := range regexp.MustCompile(`wasmorch_[a-z_]+`).FindAllString(string(dash), -1) {
		base := used
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if !names[base] {
			t.Errorf("the dashboard queries %s, which /metrics does not have", used)
		}
	}
	if m[`wasmorch_worker_instance_exits_total{reason="Error",workload="crashy"}`] < 2 {
		t.Errorf("crashy's exits are not counted: %v", m[`wasmorch_worker_instance_exits_total{reason="Error",workload="crashy"}`])
	}

	// The crash loop records one BackOff event per window, not one per restart.
	eventually(t, "a BackOff event of crashy", func() (bool, string) {
		r := c.mustRun("get", "events", "--workload", "crashy", "-o", "json")
		return strings.Count(r.stdout, `"BackOff"`) == 1, r.stdout
	})
	if r := c.mustRun("get", "events", "--workload", "crashy", "-o", "json"); strings.Count(r.stdout, `"BackOff"`) != 1 {
		t.Errorf("a crash loop of a few seconds recorded more than one BackOff event:\n%s", r.stdout)
	}

	var top []struct {
		ID          string `json:"id"`
		Workload    string `json:"workload"`
		MemoryBytes int64  `json:"memoryBytes"`
		Unmeasured  bool   `json:"unmeasured"`
	}
	r := c.mustRun("top", "instances", "--workload", "ticker", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &top); err != nil || len(top) != 1 {
		t.Fatalf("top instances: %v\n%s", err, r)
	}
	if top[0].Workload != "ticker" || top[0].MemoryBytes != 64<<10 || top[0].Unmeasured {
		t.Errorf("top of ticker = %+v, want its one 64 KiB page measured", top[0])
	}
	if r := c.mustRun("top", "nodes"); !strings.Contains(r.stdout, "e2e-node") || !strings.Contains(r.stdout, "CPU%") {
		t.Errorf("top nodes printed:\n%s", r.stdout)
	}
}

// TestGRPCClientsWithExportedCredentials: the PEM files `credentials
// export` writes let any gRPC client call the API; the health service
// answers without a certificate, reflection and the API do not.
func TestGRPCClientsWithExportedCredentials(t *testing.T) {
	c := startUp(t)
	dir := t.TempDir()
	c.mustRun("credentials", "export", "--dir", dir)
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if fi, err := os.Stat(filepath.Join(dir, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key.pem: %v, mode %v; want 0600", err, fi.Mode())
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(read("ca.pem")) {
		t.Fatal("ca.pem holds no certificate")
	}
	cert, err := tls.X509KeyPair(read("cert.pem"), read("key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	dial := func(certs ...tls.Certificate) *grpc.ClientConn {
		conn, err := grpc.NewClient(c.api, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: certs})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	anon, admin := dial(), dial(cert)

	h, err := healthpb.NewHealthClient(anon).Check(ctx, &healthpb.HealthCheckRequest{Service: "wasmorch.v1.Control"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health without a certificate: %v, %v; want SERVING", h, err)
	}
	listServices := func(conn *grpc.ClientConn) ([]string, error) {
		s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		// A stream the server has already ended (refused) gives io.EOF
		// to Send; its status is what Recv returns.
		if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp, err := s.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, svc := range resp.GetListServicesResponse().GetService() {
			names = append(names, svc.GetName())
		}
		return names, nil
	}
	if _, err := listServices(anon); status.Code(err) != codes.Unauthenticated {
		t.Errorf("reflection without a certificate: %v, want Unauthenticated", err)
	}
	names, err := listServices(admin)
	if err != nil || !strings.Contains(strings.Join(names, ","), "wasmorch.v1.Control") {
		t.Errorf("reflection with the exported credential: %v, %v", names, err)
	}
}

// healthCheck asks the standard health service of the member at api, as
// a probe without a certificate would, trusting the ca.pem in dir
// (written by credentials export).
func healthCheck(t *testing.T, dir, api string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("ca.pem holds no certificate")
	}
	conn, err := grpc.NewClient(api, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return resp.GetStatus(), err
}

// TestAgentServesItsWorkersMetrics: an agent started with --metrics-addr
// serves its worker's metrics (instances by state, restarts and exits,
// start times) by name and value after real work, and the member the
// agent heartbeats to reports the node's heartbeat age.
func TestAgentServesItsWorkersMetrics(t *testing.T) {
	m := startServer(t)
	addr := loopbackAddr(t, "127.0.0.1")
	m.agents["obs"] = startDaemon(t, "agent-obs", m.env, "agent", "--server", m.api, "--token", m.joinToken(), "--name", "obs",
		"--data-dir", t.TempDir(), "--listen", loopbackAddr(t, "127.0.0.1"), "--metrics-addr", addr)
	m.waitNode("obs", "Ready")
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "ticker", "--replicas", "2")
	m.mustRun("deploy", "testdata/fail.wasm", "--name", "crashy", "--no-wait")

	eventually(t, "the agent's metrics of its instances", func() (bool, string) {
		a := scrape(t, addr)
		for key, want := range map[string]float64{
			`wasmorch_worker_instances{node="obs",state="Running"}`: 2,
		} {
			if a[key] != want {
				return false, fmt.Sprintf("%s = %v, want %v", key, a[key], want)
			}
		}
		for _, key := range []string{`wasmorch_worker_instance_restarts_total{workload="crashy"}`, `wasmorch_worker_instance_exits_total{reason="Error",workload="crashy"}`} {
			if a[key] < 2 {
				return false, fmt.Sprintf("%s = %v, want at least 2", key, a[key])
			}
		}
		if a["wasmorch_worker_instance_start_seconds_count"] < 4 {
			return false, fmt.Sprintf("wasmorch_worker_instance_start_seconds_count = %v, want at least 4", a["wasmorch_worker_instance_start_seconds_count"])
		}
		if _, ok := a["go_goroutines"]; !ok {
			return false, "no go_goroutines"
		}
		return true, ""
	})
	eventually(t, "the member's metrics of the agent's node", func() (bool, string) {
		s := m.scrape()
		age, ok := s[`wasmorch_node_heartbeat_age_seconds{node="obs"}`]
		return ok && s[`wasmorch_node_ready{node="obs"}`] == 1 && s[`wasmorch_workload_instances{state="Running",workload="ticker"}`] == 2,
			fmt.Sprintf("heartbeat age %v (present %v), ready %v", age, ok, s[`wasmorch_node_ready{node="obs"}`])
	})

	// A node that cannot be asked: top still lists its instances, saying why.
	m.agents["obs"].stop(syscall.SIGKILL)
	var top []struct {
		ID    string `json:"id"`
		Error string `json:"error"`
	}
	r := m.mustRun("top", "instances", "--workload", "ticker", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &top); err != nil {
		t.Fatalf("top instances -o json: %v\n%s", err, r)
	}
	if len(top) != 2 || top[0].Error == "" || top[1].Error == "" {
		t.Errorf("top instances of a stopped node's workload: %+v, want its 2 instances with an error", top)
	}
	if r := m.mustRun("top", "instances", "--workload", "ticker"); !strings.Contains(r.stdout, "- (") {
		t.Errorf("top instances of a stopped node's workload printed:\n%s", r.stdout)
	}
}
