package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The web dashboard (docs/dashboard.md), tested in a real browser: Debian's
// chromium, headless, driven by chromedp. .ci/run installs chromium; a
// developer's machine without it skips the browser test, CI fails it.

// browserLimit bounds the whole browser session, so that a page that never
// shows what is waited for ends the test instead of hanging it.
const browserLimit = 3 * time.Minute

// chromium is the browser's path, or skips the test where none is
// installed (never on CI).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH: .ci/run installs Debian's chromium for the dashboard's browser tests")
	}
	t.Skip("no chromium on PATH: apt-get install chromium to run the dashboard's browser tests")
	return ""
}

// TestDashboardRefusesEveryRequestWithoutAValidToken asks for pages, data
// and streams with no token, a wrong one and an expired one: each is
// answered 401 with the login page, and never with a workload's name.
func TestDashboardRefusesEveryRequestWithoutAValidToken(t *testing.T) {
	t.Parallel()
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "secret-plans")
	base := "http://" + c.metrics

	// A token minted for a second lives its second, then is refused.
	expired := uiToken(t, c, "--ttl", "1s")
	valid := uiToken(t, c)
	forged := valid[:len(valid)-8] + "AAAAAAAA" // the signature changed

	paths := []string{"/ui/", "/ui/api/list/workloads", "/ui/api/workloads/secret-plans", "/ui/api/watch?w=workloads:0",
		"/ui/api/workloads/secret-plans/logs", "/ui/static/app.js", "/ui/no-such-page"}
	for _, tc := range []struct{ name, cookie, why string }{
		{"no token", "", "Log in with a dashboard token"},
		{"a wrong token", "wmui_not-a-token", "malformed"},
		{"a forged token", forged, "not signed by this cluster's CA"},
		{"a join token", "wmt_abc.def.ghi", "not a dashboard token"},
	} {
		for _, p := range paths {
			code, why, body := get(t, base+p, tc.cookie)
			if code != http.StatusUnauthorized || !strings.Contains(why, tc.why) || !strings.Contains(body, `id="login"`) || strings.Contains(body, "secret-plans") {
				t.Errorf("%s, GET %s: %d (%q), want 401 with the login page and no data:\n%s", tc.name, p, code, why, body)
			}
		}
	}
	eventually(t, "the one-second token refused as expired", func() (bool, string) {
		code, why, body := get(t, base+"/ui/api/list/workloads", expired)
		return code == http.StatusUnauthorized && strings.Contains(why, "expired at") && !strings.Contains(body, "secret-plans"), fmt.Sprintf("%d %q", code, why)
	})

	// Logging in with a bad token is refused the same way; a good one
	// gets the cookie, and the data.
	req, _ := http.NewRequest("POST", base+"/ui/login", strings.NewReader(`{"token":"`+forged+`"}`))
	req.Header.Set("X-Wasmorch-UI", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("login with a forged token: %d, cookies %v; want 401 and none", resp.StatusCode, resp.Cookies())
	}
	if code, _, body := get(t, base+"/ui/api/list/workloads", valid); code != http.StatusOK || !strings.Contains(body, "secret-plans") {
		t.Errorf("with a valid token: %d\n%s", code, body)
	}

	// A change needs the page's own header too: a form or a link from
	// another site cannot send it.
	req, _ = http.NewRequest("POST", base+"/ui/api/workloads/secret-plans/scale", strings.NewReader(`{"replicas":0}`))
	req.AddCookie(&http.Cookie{Name: "wasmorch_ui", Value: valid})
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a scale without the page's header: %d, want 403", resp.StatusCode)
	}
	if ws := c.workloads(); len(ws) != 1 || ws[0].Replicas != 1 {
		t.Errorf("workloads after the refused scale: %s", toJSON(ws))
	}
}

// TestDashboardShowsADeployLiveAndScales is the dashboard's tour: log in
// with the URL `ui token` prints, see a workload deployed by the CLI
// appear without reloading, scale it from its page, and see the new count
// (and the CLI agree). Screenshots of the main pages go to
// $WASMORCH_DASHBOARD_SCREENSHOTS when it is set (docs/dashboard/).
func TestDashboardShowsADeployLiveAndScales(t *testing.T) {
	t.Parallel()
	browser := chromium(t)
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "ticker", "--replicas", "2")
	url := strings.TrimSpace(c.mustRun("ui", "token", "--addr", c.metrics).stdout)
	if !strings.HasPrefix(url, "http://"+c.metrics+"/ui/#token=wmui_") {
		t.Fatalf("ui token printed %q", url)
	}
	shots := os.Getenv("WASMORCH_DASHBOARD_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.WindowSize(1360, 900), chromedp.Flag("lang", "en-US"))...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	// The first run starts the browser and must not carry a timeout (it
	// would end the browser); the steps after it are bounded.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", browser, err)
	}
	ctx, cancel := context.WithTimeout(bctx, browserLimit)
	defer cancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			body, _ := chromedp.Run(bctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
			t.Fatalf("%s: %v\nthe page shows:\n%s", what, err, body)
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Without a token the browser gets the login page.
	do("the login page", chromedp.Navigate("http://"+c.metrics+"/ui/"), chromedp.WaitVisible("#login-form"))
	shot("login")

	// The URL logs in by itself and lands on the workloads, live.
	do("logging in with the URL", chromedp.Navigate("about:blank"), chromedp.Navigate(url), chromedp.WaitVisible(`tr[data-workload="ticker"]`), chromedp.WaitVisible(".live.on"))
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); strings.Contains(loc, "token=") {
		t.Errorf("the token stayed in the address bar: %s", loc)
	}
	// A mark that a reload would wipe.
	do("marking the page", chromedp.Evaluate[chromedp.Void]("window.notReloaded = true"))

	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "web", "--replicas", "1")
	do("the workload deployed by the CLI appearing", chromedp.WaitVisible(`tr[data-workload="web"]`))
	do("web ready", pollTrue(`document.querySelector('tr[data-workload="web"] td.ready')?.textContent === '1/1'`))
	shot("workloads")

	do("opening web's page", clickWhenThere(`tr[data-workload="web"] a`), chromedp.WaitVisible("#scale-replicas"),
		pollTrue(`document.querySelectorAll('#instances tr[data-instance]').length === 1`))
	// A second tab on the same page: the two share the six connections a
	// browser opens to one server, which their streams must leave room in.
	tab, closeTab := chromedp.NewContext(bctx)
	defer closeTab()
	tabCtx, cancelTab := context.WithTimeout(tab, browserLimit)
	defer cancelTab()
	if err := chromedp.Do(tabCtx, chromedp.Navigate("http://"+c.metrics+"/ui/#/workloads/web"), chromedp.WaitVisible(".live.on")); err != nil {
		t.Fatalf("web's page in a second tab: %v", err)
	}
	do("scaling web to 3 from the page", chromedp.SendKeys("#scale-replicas", "3"), chromedp.Click("#scale"),
		chromedp.WaitVisible("#confirm-ok"), chromedp.Click("#confirm-ok"))
	do("web's page showing three ready instances",
		pollTrue(`document.querySelectorAll('#instances tr[data-instance] td.state-Running').length === 3`),
		pollTrue(`document.getElementById('rollout-text')?.textContent.includes('3/3 ready')`))
	do("web's logs followed on its page", pollTrue(`/\[web-[a-z0-9]+\] tick/.test(document.getElementById('logs')?.textContent)`))
	if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("window.notReloaded === true")); err != nil || !ok {
		t.Errorf("the page was reloaded (mark %v, %v): it should follow the cluster live", ok, err)
	}
	if ws := c.workloads(); !hasWorkload(ws, "web", 3) {
		t.Errorf("the CLI does not see web at 3 replicas: %s", toJSON(ws))
	}
	shot("workload")

	for _, page := range []string{"instances", "nodes", "events"} {
		do("the "+page+" page", chromedp.Click(`header nav a[data-view="`+page+`"]`), pollTrue(`document.querySelector('main h1')?.textContent === '`+strings.ToUpper(page[:1])+page[1:]+`'`))
		shot(page)
	}
	do("the nodes page shows the node", chromedp.Click(`header nav a[data-view="nodes"]`), chromedp.WaitVisible(`tr[data-node="e2e-node"]`))

	// A function's page shows its request rate while requests come.
	c.deployFunction("testdata/greet.wasm", "greet", "/greet")
	stop, sent := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sent)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			_, _ = c.do(ctx, request{path: "/greet"})
		}
	}()
	defer func() {
		if stop != nil {
			close(stop)
			<-sent
		}
	}()
	do("greet's page showing a request rate", chromedp.Click(`header nav a[data-view="workloads"]`), clickWhenThere(`tr[data-workload="greet"] a`),
		pollTrue(`Number(document.getElementById('request-rate')?.dataset.rate) > 0`))
	shot("function")
	close(stop)
	<-sent
	stop = nil

	// The member restarts (the same data dir and addresses): the page,
	// never reloaded, follows the cluster again.
	do("back to the workloads", chromedp.Click(`header nav a[data-view="workloads"]`), chromedp.WaitVisible(".live.on"))
	if code := c.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("up exited with %d when stopped", code)
	}
	do("the page seeing the member gone", chromedp.WaitNotPresent(".live.on"))
	c = startUpAt(t, c.dataDir, c.api, c.http, "--metrics-addr", c.metrics)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "after-restart")
	do("a workload deployed after the restart appearing", chromedp.WaitVisible(`tr[data-workload="after-restart"]`), chromedp.WaitVisible(".live.on"))
	if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("window.notReloaded === true")); err != nil || !ok {
		t.Errorf("the page was reloaded across the restart (mark %v, %v)", ok, err)
	}
}

func hasWorkload(ws []workloadJSON, name string, replicas int) bool {
	for _, w := range ws {
		if w.Name == name && w.Replicas == replicas {
			return true
		}
	}
	return false
}

// clickWhenThere waits for an element and clicks it in one turn of the
// page's script: a table the page redraws as the cluster changes would
// otherwise replace the element between the query and the click.
func clickWhenThere(selector string) chromedp.Action[chromedp.Void] {
	return pollTrue(fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false; e.click(); return true; })()`, selector))
}

// pollTrue waits until a JavaScript expression is true.
func pollTrue(expr string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(0))(ctx, t)
		if err != nil {
			return chromedp.Void{}, fmt.Errorf("waiting for %s: %w", expr, err)
		}
		return chromedp.Void{}, nil
	}
}

// uiToken mints a dashboard token with `wasmorch ui token` and returns it.
func uiToken(t *testing.T, c *cluster, args ...string) string {
	t.Helper()
	out := strings.TrimSpace(c.mustRun(append([]string{"ui", "token", "--addr", c.metrics}, args...)...).stdout)
	_, tok, ok := strings.Cut(out, "#token=")
	if !ok {
		t.Fatalf("ui token printed %q, want a URL with #token=", out)
	}
	return tok
}

// get fetches url with the token as the dashboard's cookie ("": none), and
// returns the status, the refusal's reason and the body.
func get(t *testing.T, url, token string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.AddCookie(&http.Cookie{Name: "wasmorch_ui", Value: token})
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// A stream answered 200 would never end: read what is there.
	body := make([]byte, 64<<10)
	n, _ := io.ReadAtLeast(resp.Body, body, 1)
	return resp.StatusCode, resp.Header.Get("X-Wasmorch-UI-Error"), string(body[:n])
}
