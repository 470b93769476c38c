package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestNoListenerAnswersWithoutACertificate tries every TCP socket that a
// running `up`, `server` and `agent` listen on, as a local user without
// any of the cluster's files would: a plain etcd v3 client, the same over
// TLS, plain HTTP (etcd's JSON gateway and its peer endpoints), TLS
// without a client certificate, and the gRPC API without one. Every try
// must be refused; the only things that answer are the gateway's public
// HTTP (functions, /healthz, /readyz), which is not tried for those
// routes, and GET /metrics on the metrics listener (loopback, read-only).
// The gateway itself serves no metrics. On the etcd peer port a node's
// certificate of the same CA is refused too: only members speak raft.
func TestNoListenerAnswersWithoutACertificate(t *testing.T) {
	up := startUp(t)
	m := startServer(t)
	agentDir := t.TempDir()
	agent := startDaemon(t, "agent-probe", m.env, "agent", "--server", m.api, "--token", m.joinToken(), "--name", "probe",
		"--data-dir", agentDir, "--listen", loopbackAddr(t, "127.0.0.1"))
	m.waitNode("probe", "Ready")

	for _, p := range []struct {
		what             string
		pid              int
		gateway, metrics string
		nodeDir          string // a node credential to try on etcd's peer port
	}{
		{"up", up.proc.cmd.Process.Pid, up.http, up.metrics, filepath.Join(up.dataDir, "worker")},
		{"server", m.server.proc.cmd.Process.Pid, m.http, m.metrics, agentDir},
		{"agent", agent.proc.cmd.Process.Pid, "", "", ""},
	} {
		addrs := listeningAddrs(t, p.pid)
		if len(addrs) == 0 {
			t.Fatalf("%s (pid %d) listens on nothing that /proc shows", p.what, p.pid)
		}
		t.Logf("%s listens on %s", p.what, strings.Join(addrs, ", "))
		var nodeCert tls.Certificate
		if p.nodeDir != "" {
			nodeCert = nodeCertificate(t, p.nodeDir)
		}
		var wg sync.WaitGroup
		for _, addr := range addrs {
			wg.Go(func() {
				for _, refused := range probeWithoutCertificate(addr, addr == p.gateway) {
					if refused.err == nil {
						t.Errorf("%s at %s answered %s: %s", p.what, addr, refused.how, refused.answer)
					}
				}
				if p.nodeDir != "" && addr != p.gateway {
					if answer, err := etcdWithCertificate(addr, nodeCert); err == nil {
						t.Errorf("%s at %s answered etcd over TLS with a node's certificate: %s", p.what, addr, answer)
					}
				}
			})
		}
		wg.Wait()
		if p.gateway != "" {
			if code, body := httpGet(t, "http://"+p.gateway+"/metrics"); code != http.StatusNotFound {
				t.Errorf("%s's gateway answered GET /metrics with %d: %.200q", p.what, code, body)
			}
			if !slices.Contains(addrs, p.metrics) {
				t.Errorf("%s does not listen on its metrics address %s", p.what, p.metrics)
			}
			if code, body := httpGet(t, "http://"+p.metrics+"/metrics"); code != http.StatusOK || !strings.Contains(body, "wasmorch_controlplane_is_leader") {
				t.Errorf("%s's metrics listener answered GET /metrics with %d: %.200q", p.what, code, body)
			}
		}
	}
}

// httpGet is GET url: the status and the start of the body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: probeTimeout}
	resp, err := client.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b)
}

// probeTimeout bounds each try; a refusal usually comes at once.
const probeTimeout = 1500 * time.Millisecond

// listeningAddrs are the TCP addresses the process pid listens on, read
// from /proc: the inodes of its socket descriptors matched against the
// listening sockets of its network namespace.
func listeningAddrs(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(target, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			const listen = "0A"
			if len(fields) < 10 || fields[3] != listen || !inodes[fields[9]] {
				continue
			}
			out = append(out, procAddr(t, fields[1]))
		}
		_ = f.Close()
	}
	return out
}

// procAddr turns /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080".
func procAddr(t *testing.T, s string) string {
	t.Helper()
	hexIP, hexPort, _ := strings.Cut(s, ":")
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, len(hexIP)/2)
	for i := range raw {
		b, err := strconv.ParseUint(hexIP[2*i:2*i+2], 16, 8)
		if err != nil {
			t.Fatal(err)
		}
		raw[i] = byte(b)
	}
	// The kernel prints each 32-bit word in host (little-endian) order.
	for w := 0; w+4 <= len(raw); w += 4 {
		raw[w], raw[w+1], raw[w+2], raw[w+3] = raw[w+3], raw[w+2], raw[w+1], raw[w]
	}
	ip := net.IP(raw)
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), strconv.FormatUint(port, 10))
}

// probe is one attempt on a listener: how, and what came back (err set
// when it was refused).
type probe struct {
	how, answer string
	err         error
}

// probeWithoutCertificate tries addr every way a client without the
// cluster's files could. On the gateway (gateway set) plain HTTP is sent
// to etcd's paths only: its own public routes answer by design.
func probeWithoutCertificate(addr string, gateway bool) []probe {
	var out []probe
	add := func(how, answer string, err error) { out = append(out, probe{how, answer, err}) }

	// etcd's v3 API over gRPC, in plain text and over TLS without a
	// client certificate.
	for _, tlsCfg := range []*tls.Config{nil, {InsecureSkipVerify: true}} {
		how := "a plain etcd v3 client"
		if tlsCfg != nil {
			how = "an etcd v3 client over TLS without a certificate"
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: probeTimeout, TLS: tlsCfg, Logger: zap.NewNop()})
		if err != nil {
			add(how, "", err)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		resp, err := cli.Get(ctx, "/wasmorch/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(5))
		cancel()
		_ = cli.Close()
		answer := ""
		if err == nil {
			answer = fmt.Sprintf("%d keys under /wasmorch/", resp.Count)
		}
		add(how, answer, err)
	}

	// etcd's JSON gateway and its peer endpoints, over plain HTTP and over
	// TLS without a client certificate.
	paths := []string{"/v3/kv/range", "/members", "/version"}
	for _, scheme := range []string{"http", "https"} {
		if gateway && scheme == "http" {
			paths = []string{"/v3/kv/range"}
		}
		client := &http.Client{Timeout: probeTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		for _, path := range paths {
			how := fmt.Sprintf("%s %s without a certificate", strings.ToUpper(scheme), path)
			body := strings.NewReader(`{"key":"L3dhc21vcmNvLw==","range_end":"L3dhc21vcmNvMA=="}`)
			resp, err := client.Post(scheme+"://"+addr+path, "application/json", body)
			if err != nil {
				add(how, "", err)
				continue
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
			_ = resp.Body.Close()
			answer := fmt.Sprintf("%s: %q", resp.Status, b)
			if resp.StatusCode >= 400 {
				add(how, answer, fmt.Errorf("refused with %s", resp.Status))
				continue
			}
			add(how, answer, nil)
		}
		client.CloseIdleConnections()
	}

	// The gRPC API itself, over TLS without a client certificate.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		resp, err := v1.NewControlClient(conn).ListWorkloads(ctx, &v1.ListWorkloadsRequest{})
		cancel()
		_ = conn.Close()
		answer := ""
		if err == nil {
			answer = fmt.Sprintf("%d workloads", len(resp.GetWorkloads()))
		}
		add("the gRPC API over TLS without a certificate", answer, err)
	}
	conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		resp, err := v1.NewControlClient(conn).ListWorkloads(ctx, &v1.ListWorkloadsRequest{})
		cancel()
		_ = conn.Close()
		answer := ""
		if err == nil {
			answer = fmt.Sprintf("%d workloads", len(resp.GetWorkloads()))
		}
		add("the gRPC API in plain text", answer, err)
	}
	return out
}

// nodeCertificate is the node certificate kept in nodeDir/pki.
func nodeCertificate(t *testing.T, nodeDir string) tls.Certificate {
	t.Helper()
	nc, err := auth.LoadNodeCredential(filepath.Join(nodeDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(nc.CertPEM, nc.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// etcdWithCertificate speaks to addr as etcd's peers do (HTTPS, GET
// /members) with cert.
func etcdWithCertificate(addr string, cert tls.Certificate) (string, error) {
	client := &http.Client{Timeout: probeTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, Certificates: []tls.Certificate{cert},
	}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addr + "/members")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode >= 400 {
		return "", fmt.Errorf("refused with %s", resp.Status)
	}
	return fmt.Sprintf("%s: %q", resp.Status, b), nil
}
