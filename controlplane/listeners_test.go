package controlplane_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane"
)

// get answers GET url: the status and the body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// The gateway's port is public (anyone who may call a function reaches
// it): it answers functions, /healthz and /readyz, and nothing about the
// member; the metrics have a listener of their own.
func TestMetricsAreServedApartFromTheGateway(t *testing.T) {
	c := startCluster(t, t.TempDir())
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, "http://"+c.srv.HTTPAddr()+path); code != http.StatusOK {
			t.Errorf("gateway %s: %d %q, want 200", path, code, body)
		}
	}
	if code, body := get(t, "http://"+c.srv.HTTPAddr()+"/metrics"); code != http.StatusNotFound || strings.Contains(body, "wasmorch_") {
		t.Errorf("gateway /metrics: %d %q, want 404 and no metrics", code, body)
	}
	if c.srv.MetricsAddr() == "" || c.srv.MetricsAddr() == c.srv.HTTPAddr() {
		t.Fatalf("metrics address %q: want a listener of its own", c.srv.MetricsAddr())
	}
	code, body := get(t, "http://"+c.srv.MetricsAddr()+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "wasmorch_controlplane_is_leader") {
		t.Errorf("metrics listener /metrics: %d, want 200 with wasmorch_controlplane_is_leader:\n%.300s", code, body)
	}
	// Only the metrics there: not a second gateway.
	if code, _ := get(t, "http://"+c.srv.MetricsAddr()+"/healthz"); code != http.StatusNotFound {
		t.Errorf("metrics listener /healthz: %d, want 404", code)
	}
}

func TestMetricsCanBeTurnedOff(t *testing.T) {
	c := startClusterWith(t, t.TempDir(), func(cfg *controlplane.Config) { cfg.MetricsAddr = "" })
	if addr := c.srv.MetricsAddr(); addr != "" {
		t.Errorf("MetricsAddr() = %q with metrics off, want \"\"", addr)
	}
	if code, _ := get(t, "http://"+c.srv.HTTPAddr()+"/metrics"); code != http.StatusNotFound {
		t.Errorf("gateway /metrics with metrics off: %d, want 404", code)
	}
}

func TestMetricsAddressIsChecked(t *testing.T) {
	cfg := controlplane.DefaultConfig()
	if cfg.MetricsAddr != controlplane.DefaultMetricsAddr {
		t.Errorf("default metrics address %q, want %q", cfg.MetricsAddr, controlplane.DefaultMetricsAddr)
	}
	if host, _, err := net.SplitHostPort(cfg.MetricsAddr); err != nil || !net.ParseIP(host).IsLoopback() {
		t.Errorf("default metrics address %q is not on loopback", cfg.MetricsAddr)
	}
	cfg.MetricsAddr = "9090"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `metrics address "9090" is not host:port`) {
		t.Errorf("Validate with metrics address 9090: %v", err)
	}
}
