package controlplane_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A dashboard token is minted by an admin and stands for that admin on
// the Control API, as the dashboard presents it: no client certificate,
// the token as bearer metadata. It is no more than that admin: it cannot
// mint tokens of its own, nor speak for a node.
func TestDashboardTokensActAsTheAdminWhoMintedThem(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cred, err := c.srv.AdminCredential()
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := cred.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	adminConn, err := grpc.NewClient(c.srv.APIAddr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer adminConn.Close()
	admin := v1.NewControlClient(adminConn)

	if _, err := c.control.CreateUIToken(ctx, &v1.CreateUITokenRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a member minting a dashboard token: %v, want PermissionDenied", err)
	}
	if _, err := admin.CreateUIToken(ctx, &v1.CreateUITokenRequest{TtlSeconds: int64(25 * time.Hour / time.Second)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a 25h dashboard token: %v, want InvalidArgument", err)
	}
	resp, err := admin.CreateUIToken(ctx, &v1.CreateUITokenRequest{TtlSeconds: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(time.Unix(0, resp.GetExpiresUnixNano())); left <= 59*time.Minute || left > time.Hour {
		t.Errorf("a one-hour token expires in %s", left)
	}

	// No certificate: only the token says who calls.
	bare, err := grpc.NewClient(c.srv.APIAddr(), grpc.WithTransportCredentials(credentials.NewTLS(auth.MemberClientTLS(auth.PoolOf([]byte(cred.CA)), nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	control, agent := v1.NewControlClient(bare), v1.NewAgentClient(bare)
	with := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	if _, err := control.ListWorkloads(ctx, &v1.ListWorkloadsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no certificate and no token: %v, want Unauthenticated", err)
	}
	if _, err := control.ListWorkloads(with(resp.GetToken()), &v1.ListWorkloadsRequest{}); err != nil {
		t.Errorf("listing workloads with a dashboard token: %v", err)
	}
	forged := resp.GetToken()[:len(resp.GetToken())-6] + "AAAAAA"
	if _, err := control.ListWorkloads(with(forged), &v1.ListWorkloadsRequest{}); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "not signed by this cluster's CA") {
		t.Errorf("a forged dashboard token: %v, want Unauthenticated", err)
	}
	if _, err := control.CreateUIToken(with(resp.GetToken()), &v1.CreateUITokenRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a dashboard token minting another: %v, want Unauthenticated", err)
	}
	if _, err := agent.Heartbeat(with(resp.GetToken()), &v1.HeartbeatRequest{Node: "n1"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a dashboard token speaking for a node: %v, want PermissionDenied", err)
	}

	// The member's own listener serves the dashboard with the same token,
	// and nothing without it.
	base := "http://" + c.srv.MetricsAddr()
	if code, body := get(t, base+"/ui/api/list/workloads"); code != http.StatusUnauthorized || !strings.Contains(body, `id="login"`) {
		t.Errorf("the dashboard without a token: %d\n%.300s", code, body)
	}
	req, _ := http.NewRequest("GET", base+"/ui/api/list/nodes", nil)
	req.AddCookie(&http.Cookie{Name: "wasmorch_ui", Value: resp.GetToken()})
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Errorf("the dashboard's node list with a token: %d", r.StatusCode)
	}
}

// A dashboard token is worth no more than the credential that minted it:
// revoking that credential refuses the token, and ends the streams (a
// watch) open with it.
func TestDashboardTokensEndWithTheCredentialThatMintedThem(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cred, err := c.srv.AdminCredential()
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := cred.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	adminConn, err := grpc.NewClient(c.srv.APIAddr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer adminConn.Close()
	resp, err := v1.NewControlClient(adminConn).CreateUIToken(ctx, &v1.CreateUITokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bare, err := grpc.NewClient(c.srv.APIAddr(), grpc.WithTransportCredentials(credentials.NewTLS(auth.MemberClientTLS(auth.PoolOf([]byte(cred.CA)), nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	control := v1.NewControlClient(bare)
	withToken := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+resp.GetToken())
	watch, err := control.Watch(withToken, &v1.WatchRequest{Kind: v1.WatchKind_WATCH_KIND_NODES})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("a watch with a dashboard token: %v", err)
	}

	cert, err := auth.ParseCertificate([]byte(cred.Cert))
	if err != nil {
		t.Fatal(err)
	}
	// The member's own credential: revoked, it writes a new one; the
	// member itself goes on.
	if _, err := c.control.RevokeCredential(ctx, &v1.RevokeCredentialRequest{Serial: auth.Serial(cert), Reason: "laptop lost"}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err = watch.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "laptop lost") {
		t.Errorf("the watch open with the token, after the revocation: %v, want Unauthenticated saying why", err)
	}
	if _, err := control.ListNodes(withToken, &v1.ListNodesRequest{}); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("a call with the token after the revocation: %v, want Unauthenticated", err)
	}
	req, _ := http.NewRequest("GET", "http://"+c.srv.MetricsAddr()+"/ui/api/list/nodes", nil)
	req.AddCookie(&http.Cookie{Name: "wasmorch_ui", Value: resp.GetToken()})
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Body.Close()
	if r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.Header.Get("X-Wasmorch-UI-Error"), "revoked") {
		t.Errorf("the dashboard with the token after the revocation: %d %q, want 401 saying it was revoked", r.StatusCode, r.Header.Get("X-Wasmorch-UI-Error"))
	}
}

// The dashboard's HTTP surface: logging in only from its own page, the
// cookie a browser keeps, its own script and style and nothing else of
// its files, and a watch refused as it starts answered as an event the
// page reads.
func TestDashboardLoginFilesAndRefusedWatches(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cred, err := c.srv.AdminCredential()
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := cred.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	adminConn, err := grpc.NewClient(c.srv.APIAddr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer adminConn.Close()
	resp, err := v1.NewControlClient(adminConn).CreateUIToken(ctx, &v1.CreateUITokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + c.srv.MetricsAddr()
	do := func(method, path, body string, header map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		for k, v := range header {
			req.Header.Set(k, v)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	login := `{"token":"` + resp.GetToken() + `"}`
	if r := do("POST", "/ui/login", login, nil); r.StatusCode != http.StatusForbidden || len(r.Cookies()) != 0 {
		t.Errorf("a login posted without the page's header (a form on another site): %d, cookies %v; want 403 and none", r.StatusCode, r.Cookies())
	}
	r := do("POST", "/ui/login", login, map[string]string{"X-Wasmorch-UI": "1"})
	if r.StatusCode != http.StatusNoContent || len(r.Cookies()) != 1 {
		t.Fatalf("a login with a valid token: %d, cookies %v", r.StatusCode, r.Cookies())
	}
	ck := r.Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui/" || ck.Value != resp.GetToken() {
		t.Errorf("the login cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui/, the token", ck)
	}
	withCookie := map[string]string{"Cookie": "wasmorch_ui=" + resp.GetToken()}
	for path, want := range map[string]int{
		"/ui/":                  http.StatusOK,
		"/ui/static/app.js":     http.StatusOK,
		"/ui/static/style.css":  http.StatusOK,
		"/ui/static/login.html": http.StatusNotFound, // a template, not a file to serve
		"/ui/static/assets.go":  http.StatusNotFound,
		"/ui/api/list/secrets":  http.StatusNotFound,
	} {
		r := do("GET", path, "", withCookie)
		_ = r.Body.Close()
		if r.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, r.StatusCode, want)
		}
		if path == "/ui/" && strings.Contains(r.Header.Get("Content-Security-Policy"), "unsafe-inline") {
			t.Errorf("the page allows inline scripts: %s", r.Header.Get("Content-Security-Policy"))
		}
	}
	// A revision ahead of the cluster's is refused when the watch starts:
	// the page reads that as an event.
	r = do("GET", "/ui/api/watch?w=nodes:0&w=workloads:99999999", "", withCookie)
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("a stream of two watches: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
	// The first watch goes on; the second ends alone, saying why.
	lines := bufio.NewScanner(r.Body)
	var seen []string
	for lines.Scan() && len(seen) < 2 {
		if line, ok := strings.CutPrefix(lines.Text(), "data: "); ok {
			seen = append(seen, line)
		}
	}
	if len(seen) != 2 || !strings.HasPrefix(seen[0], `{"i":0,"ev":`) || !strings.Contains(seen[0], "BOOKMARK") ||
		!strings.Contains(seen[1], `"i":1`) || !strings.Contains(seen[1], `"failure":{"code":"InvalidArgument"`) {
		t.Errorf("a stream of a watch of nodes and one from a revision ahead sent:\n%s", strings.Join(seen, "\n"))
	}
}
