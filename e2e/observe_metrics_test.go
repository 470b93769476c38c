package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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
	resp, err := http.Get("http://" + c.metrics + "/metrics")
	if err != nil {
		c.t.Fatal(err)
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
			c.t.Fatalf("metrics line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

// TestMetricsAfterRealRequests: requests to a function, a crash loop and
// a running service show in the member's metrics by name and value, the
// crash loop records a rate-limited BackOff event, and top reports what
// a ticker uses (its one page of linear memory).
func TestMetricsEventsAndTopAfterRealWork(t *testing.T) {
	c := startUp(t)
	c.mustRun("deploy", "testdata/greet.wasm", "--name", "greet", "--route", "/greet", "--env", "GREETING=hi")
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
	if resp, err := http.Get("http://" + c.http + "/cold?who=e2e"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a cold request: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

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
		if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
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
