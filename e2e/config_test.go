package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/wasmorch/wasmorch/internal/ctrtest"
)

// randomMarker is a string no file holds by chance.
func randomMarker(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// logsContain waits until `logs NAME` shows want.
func logsContain(t *testing.T, c *cluster, name, want string) {
	t.Helper()
	eventually(t, "logs "+name+" show "+want, func() (bool, string) {
		r := c.run("logs", name)
		return r.code == 0 && strings.Contains(r.stdout, want), r.String()
	})
}

func TestApplyIsIdempotentAndAConfigChangeReachesTheModule(t *testing.T) {
	c := startUp(t)
	const manifest = "testdata/app.yaml"

	r := c.mustRun("apply", "-f", manifest)
	if want := "config/app-config created\nsecret/app-secret created\nworkload/app created\n"; r.stdout != want {
		t.Fatalf("first apply printed %q, want %q", r.stdout, want)
	}
	logsContain(t, c, "app", "GREETING=hello from a config")

	r = c.mustRun("apply", "-f", manifest)
	if want := "config/app-config unchanged\nsecret/app-secret unchanged\nworkload/app unchanged\n"; r.stdout != want {
		t.Fatalf("second apply printed %q, want %q", r.stdout, want)
	}
	if r := c.mustRun("diff", "-f", manifest); strings.Contains(r.stdout, "would be") {
		t.Fatalf("diff after apply shows changes:\n%s", r)
	}
	gen := c.workloads()[0].Generation

	r = c.mustRun("config", "set", "app-config", "GREETING=changed by config set", "LOG_LEVEL=info")
	if want := "config/app-config configured (rolling workload app)\n"; r.stdout != want {
		t.Fatalf("config set printed %q, want %q", r.stdout, want)
	}
	logsContain(t, c, "app", "GREETING=changed by config set")
	if got := c.workloads()[0].Generation; got != gen+1 {
		t.Fatalf("generation after the config change = %d, want %d", got, gen+1)
	}

	r = c.mustRun("diff", "-f", manifest)
	for _, want := range []string{"config/app-config would be configured", "~ GREETING: changed by config set -> hello from a config", "workload/app unchanged"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("diff does not show %q:\n%s", want, r)
		}
	}
	r = c.mustRun("apply", "-f", manifest)
	if want := "config/app-config configured (rolling workload app)\nsecret/app-secret unchanged\nworkload/app unchanged\n"; r.stdout != want {
		t.Fatalf("apply after config set printed %q, want %q", r.stdout, want)
	}
	logsContain(t, c, "app", "GREETING=hello from a config")
}

func TestBadConfigInputIsRefusedAndNothingIsStored(t *testing.T) {
	c := startUp(t)
	oneLineError(t, c.run("deploy", "testdata/hello.wasm", "--name", "h", "--from-config", "missing"), `config "missing" does not exist`)
	oneLineError(t, c.run("config", "set", "cfg", "NOEQUALS"), "argument 1 is not KEY=VALUE")
	oneLineError(t, c.run("config", "set", "Bad_Name", "A=1"), "invalid config name")
	oneLineError(t, c.run("config", "set", "cfg", "1BAD=x"), `key "1BAD" is not valid`)
	// A refusal by the server names the command as typed for its help.
	oneLineError(t, c.run("config", "set", "cfg", "1BAD=x"), "see 'wasmorch config set --help'")

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	manifest := "apiVersion: wasmorch.dev/v1\nkind: Config\nmetadata:\n  name: good\ndata:\n  A: one\n---\n" +
		"apiVersion: wasmorch.dev/v1\nkind: Workload\nmetadata:\n  name: w\nspec:\n  module: ../testdata/hello.wasm\n  replicass: 2\n"
	if err := os.WriteFile(bad, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	oneLineError(t, c.run("apply", "-f", bad), `bad.yaml:14: unknown field "spec.replicass"`)

	if r := c.mustRun("config", "list", "-o", "json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("bad input stored configs:\n%s", r)
	}
	if ws := c.workloads(); len(ws) != 0 {
		t.Fatalf("bad input created workloads: %+v", ws)
	}
}

func TestSecretPlaintextStaysOutOfEtcdOutputAndLogs(t *testing.T) {
	c := startUp(t)
	plaintext := randomMarker(t, "plaintext-")
	configValue := randomMarker(t, "config-value-")
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(plaintext), 0o600); err != nil {
		t.Fatal(err)
	}

	var printed []result
	printed = append(printed, c.mustRun("secret", "set", "db", "GREETING=@"+pwFile, "USER=app"))
	c.mustRun("config", "set", "plain", "MARKER="+configValue)
	printed = append(printed, c.mustRun("deploy", "testdata/hello.wasm", "--name", "sec", "--restart", "never", "--from-secret", "db", "--from-config", "plain"))
	// The value reaches the module, which prints it.
	logsContain(t, c, "sec", "GREETING="+plaintext)

	rotated := c.mustRun("secret", "rotate-key")
	if !strings.Contains(rotated.stdout, "1 secret(s) re-encrypted") {
		t.Fatalf("rotate-key: %s", rotated)
	}
	// Still readable under the new key: setting the same value is no change.
	if r := c.mustRun("secret", "set", "db", "GREETING=@"+pwFile, "USER=app"); r.stdout != "secret/db unchanged\n" {
		t.Fatalf("after rotation, setting the same value printed %q, want unchanged", r.stdout)
	}
	get := c.mustRun("secret", "get", "db")
	if !strings.Contains(get.stdout, "GREETING, USER") || !strings.Contains(get.stdout, "hmac-sha256:") {
		t.Fatalf("secret get does not show the keys and a digest:\n%s", get)
	}
	printed = append(printed, rotated, get,
		c.mustRun("secret", "get", "db", "-o", "json"),
		c.mustRun("secret", "list"),
		c.mustRun("secret", "list", "-o", "yaml"),
		c.mustRun("get", "workloads", "-o", "json"),
		c.mustRun("get", "instances", "-o", "json"),
		c.mustRun("describe", "workload", "sec"),
	)
	for _, r := range printed {
		if strings.Contains(r.stdout+r.stderr, plaintext) {
			t.Errorf("the secret's plaintext is printed by wasmorch %s", strings.Join(r.args, " "))
		}
	}

	if c.stop(syscall.SIGTERM) != 0 {
		t.Fatalf("up did not exit cleanly")
	}
	log, err := os.ReadFile(c.log)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(log, []byte(plaintext)) {
		t.Errorf("the server's log holds the secret's plaintext")
	}
	// The config's value is in etcd's files in plaintext: the search can
	// find what is there, so not finding the secret means something.
	etcdDir := filepath.Join(c.dataDir, "etcd")
	inEtcd := func(needle string) []string {
		var hits []string
		err := filepath.WalkDir(etcdDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bytes.Contains(b, []byte(needle)) {
				hits = append(hits, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return hits
	}
	if len(inEtcd(configValue)) == 0 {
		t.Fatalf("the config value is not found in %s: the search does not see etcd's data", etcdDir)
	}
	if hits := inEtcd(plaintext); len(hits) > 0 {
		t.Errorf("the secret's plaintext is in etcd's files: %v", hits)
	}
	fi, err := os.Stat(filepath.Join(c.dataDir, "pki", "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secrets.key has mode %v, want 0600", fi.Mode().Perm())
	}

	// After a restart the member opens its secrets again, and a change to
	// a secret reaches the module.
	c = startUpAt(t, c.dataDir, c.api, c.http)
	if r := c.mustRun("secret", "set", "db", "GREETING=@"+pwFile, "USER=app"); r.stdout != "secret/db unchanged\n" {
		t.Fatalf("after a restart, setting the same value printed %q, want unchanged", r.stdout)
	}
	second := randomMarker(t, "second-")
	if r := c.mustRun("secret", "set", "db", "GREETING="+second, "USER=app"); r.stdout != "secret/db configured (rolling workload sec)\n" {
		t.Fatalf("changing the secret printed %q", r.stdout)
	}
	logsContain(t, c, "sec", "GREETING="+second)
}

func TestConfigAndSecretFilesAreReadOnlyFilesOfTheModule(t *testing.T) {
	c := startUp(t)
	token := randomMarker(t, "token-")
	c.mustRun("config", "set", "files-cfg", "greeting=from a file")
	c.mustRun("secret", "set", "files-sec", "token="+token)
	c.mustRun("deploy", "testdata/cat.wasm", "--name", "cat", "--restart", "never",
		"--config-files", "files-cfg", "--secret-files", "files-sec", "--",
		"/config/files-cfg/greeting", "/secrets/files-sec/token", "/config/files-cfg/missing", "+/config/files-cfg/greeting")
	logsContain(t, c, "cat", "/config/files-cfg/greeting: from a file\n")
	r := c.mustRun("logs", "cat")
	for _, want := range []string{"/secrets/files-sec/token: " + token + "\n", "/config/files-cfg/missing: cannot open\n", "/config/files-cfg/greeting: cannot write\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("logs do not show %q:\n%s", want, r)
		}
	}
	c.mustRun("config", "set", "files-cfg", "greeting=changed")
	logsContain(t, c, "cat", "/config/files-cfg/greeting: changed\n")
}

// TestConfigAndSecretFilesOfAnHTTPFunction: every request's sandbox of a
// Wasm function sees its config and secret files, read-only; a config
// change reaches the answers; a function with files scaled to zero wakes
// a replica rather than starting cold without them; and the secret's
// plaintext is in no log.
func TestConfigAndSecretFilesOfAnHTTPFunction(t *testing.T) {
	c := startUp(t)
	token := randomMarker(t, "fn-token-")
	c.mustRun("config", "set", "fn-cfg", "GREETING=first value")
	c.mustRun("secret", "set", "fn-sec", "token="+token)
	c.deployFunction("testdata/catfn.wasm", "catfn", "/cat", "--config-files", "fn-cfg", "--secret-files", "fn-sec",
		"--min-replicas", "0", "--max-replicas", "2", "--idle", "1h")

	expect(t, "the config file", c.call(request{path: "/cat/config/fn-cfg/GREETING"}), 200, "first value")
	expect(t, "the secret file", c.call(request{path: "/cat/secrets/fn-sec/token"}), 200, token)
	expect(t, "a missing key", c.call(request{path: "/cat/config/fn-cfg/MISSING"}), 404, "cannot open")
	expect(t, "writing the config file", c.call(request{method: http.MethodPut, path: "/cat/config/fn-cfg/GREETING"}), 403, "cannot write")
	expect(t, "adding a file", c.call(request{method: http.MethodPut, path: "/cat/secrets/fn-sec/new"}), 403, "cannot write")
	expect(t, "the config file after the writes", c.call(request{path: "/cat/config/fn-cfg/GREETING"}), 200, "first value")

	if r := c.mustRun("config", "set", "fn-cfg", "GREETING=second value"); r.stdout != "config/fn-cfg configured (rolling workload catfn)\n" {
		t.Fatalf("config set printed %q", r.stdout)
	}
	eventually(t, "the function answers the changed config", func() (bool, string) {
		rep, err := c.do(context.Background(), request{path: "/cat/config/fn-cfg/GREETING"})
		return err == nil && rep.status == 200 && rep.body == "second value", fmt.Sprintf("%d %q %v", rep.status, rep.body, err)
	})

	// At zero replicas a request waits for a replica (the workload's spec,
	// which a cold start runs from, names the files but does not hold them).
	eventually(t, "catfn at zero", func() (bool, string) {
		c.mustRun("scale", "catfn", "--replicas", "0")
		is := c.instances("catfn")
		return len(is) == 0, toJSON(is)
	})
	expect(t, "the secret file from zero", c.call(request{path: "/cat/secrets/fn-sec/token"}), 200, token)
	expect(t, "the config file from zero", c.call(request{path: "/cat/config/fn-cfg/GREETING"}), 200, "second value")

	printed := []result{
		c.mustRun("logs", "catfn"),
		c.mustRun("describe", "workload", "catfn"),
		c.mustRun("get", "instances", "-o", "json"),
		c.mustRun("get", "workloads", "-o", "json"),
	}
	for _, r := range printed {
		if strings.Contains(r.stdout+r.stderr, token) {
			t.Errorf("the secret's plaintext is printed by wasmorch %s", strings.Join(r.args, " "))
		}
	}
	if c.stop(syscall.SIGTERM) != 0 {
		t.Fatalf("up did not exit cleanly")
	}
	log, err := os.ReadFile(c.log)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(log, []byte(token)) {
		t.Errorf("the server's log holds the secret's plaintext")
	}
	if !bytes.Contains(log, []byte("catfn")) {
		t.Fatalf("the server's log does not mention catfn: the search below means nothing")
	}
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "cold start") && strings.Contains(line, "catfn") {
			t.Errorf("a function with files was started cold: %s", line)
		}
	}
}

// Members that joined received the secrets key with the CA: a secret set
// through one member reads on every other, also after a rotation made on
// another.
func TestEveryMemberReadsSecretsSetThroughAnother(t *testing.T) {
	h := startHACluster(t)
	on := func(m *member, args ...string) result {
		t.Helper()
		r := run(t, h.env, append(args, "--server", m.api)...)
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		return r
	}
	value := randomMarker(t, "ha-")
	on(h.members[0], "secret", "set", "shared", "K="+value)
	for _, m := range h.members {
		if r := on(m, "secret", "set", "shared", "K="+value); r.stdout != "secret/shared unchanged\n" {
			t.Fatalf("through %s, setting the same value printed %q, want unchanged", m.name, r.stdout)
		}
	}
	on(h.members[1], "secret", "rotate-key")
	for _, m := range h.members {
		if r := on(m, "secret", "set", "shared", "K="+value); r.stdout != "secret/shared unchanged\n" {
			t.Fatalf("after rotation, through %s, setting the same value printed %q, want unchanged", m.name, r.stdout)
		}
	}
	first, err := os.ReadFile(filepath.Join(h.members[0].dataDir, "pki", "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range h.members[1:] {
		b, err := os.ReadFile(filepath.Join(m.dataDir, "pki", "secrets.key"))
		if err != nil || !bytes.Equal(b, first) {
			t.Fatalf("%s's secrets key differs from %s's (err %v)", m.name, h.members[0].name, err)
		}
	}
}

// TestConfigAndSecretFilesOfContainers: a container command, an HTTP
// container function and a Wasm workload running as its fallback container
// read their config and secret files, mounted read-only from a directory
// of their own that goes with them; a config change reaches all three; the
// secret's plaintext is in no log.
func TestConfigAndSecretFilesOfContainers(t *testing.T) {
	d := ctrtest.Start(t) // skips, saying why, without containerd, runc or root
	archive := appImage(t)
	server := ctrtest.HTTPServerImage(t)
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--containerd-socket", d.Socket)
	token := randomMarker(t, "ctr-token-")
	c.mustRun("config", "set", "box-cfg", "GREETING=from a file")
	c.mustRun("secret", "set", "box-sec", "token="+token)
	files := []string{"--config-files", "box-cfg", "--secret-files", "box-sec"}

	c.mustRun(slices.Concat([]string{"deploy", archive, "--name", "box", "--restart", "never"}, files,
		[]string{"--", "cat", "/config/box-cfg/GREETING", "/secrets/box-sec/token", "+/config/box-cfg/GREETING", "+/secrets/box-sec/new"})...)
	logsContain(t, c, "box", "/config/box-cfg/GREETING: from a file\n")
	r := c.mustRun("logs", "box")
	for _, want := range []string{"/secrets/box-sec/token: " + token + "\n", "/config/box-cfg/GREETING: cannot write\n", "/secrets/box-sec/new: cannot write\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("logs of box do not show %q:\n%s", want, r)
		}
	}

	c.deployFunction(server, "api", "/api", files...)
	expect(t, "the container function's config file", c.call(request{path: "/api/file/config/box-cfg/GREETING"}), 200, "from a file")
	expect(t, "the container function's secret file", c.call(request{path: "/api/file/secrets/box-sec/token"}), 200, token)

	// On the node: a directory per instance, in a parent only the worker enters.
	filesDir := filepath.Join(c.dataDir, "worker", "files")
	if fi, err := os.Stat(filesDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v %v, want mode 0700", filesDir, fi, err)
	}
	api := c.instanceDetails("api")
	if len(api) != 1 {
		t.Fatalf("instances of api = %s", toJSON(api))
	}
	if fi, err := os.Stat(filepath.Join(filesDir, api[0].ID, "secrets", "box-sec", "token")); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("api's secret file: %v %v, want mode 0444", fi, err)
	}

	c.mustRun("deploy", "testdata/badimport.wasm", "--name", "legacy", "--fallback-image", archive, "--restart", "never",
		"--config-files", "box-cfg", "--", "cat", "/config/box-cfg/GREETING")
	if det := c.instanceDetails("legacy"); len(det) != 1 || det[0].Runtime != "container" {
		t.Fatalf("instances of legacy = %s, want one as its fallback container", toJSON(det))
	}
	logsContain(t, c, "legacy", "/config/box-cfg/GREETING: from a file\n")

	r = c.mustRun("config", "set", "box-cfg", "GREETING=changed")
	for _, w := range []string{"api", "box", "legacy"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("config set does not roll %s: %q", w, r.stdout)
		}
	}
	eventually(t, "the container function answers the changed config", func() (bool, string) {
		rep, err := c.do(context.Background(), request{path: "/api/file/config/box-cfg/GREETING"})
		return err == nil && rep.status == 200 && rep.body == "changed", fmt.Sprintf("%d %q %v", rep.status, rep.body, err)
	})
	logsContain(t, c, "box", "/config/box-cfg/GREETING: changed\n")
	logsContain(t, c, "legacy", "/config/box-cfg/GREETING: changed\n")

	printed := []result{
		c.mustRun("logs", "api"),
		c.mustRun("describe", "workload", "api"),
		c.mustRun("get", "instances", "-o", "json"),
	}
	for _, r := range printed {
		if strings.Contains(r.stdout+r.stderr, token) {
			t.Errorf("the secret's plaintext is printed by wasmorch %s", strings.Join(r.args, " "))
		}
	}

	for _, w := range []string{"api", "box", "legacy"} {
		c.mustRun("delete", w)
	}
	eventually(t, "the containers and their files removed", func() (bool, string) {
		ctrs, _ := leftovers(t, d)
		left, err := os.ReadDir(filesDir)
		return len(ctrs) == 0 && err == nil && len(left) == 0, fmt.Sprintf("containers %v, files %v (%v)", ctrs, left, err)
	})

	if c.stop(syscall.SIGTERM) != 0 {
		t.Fatalf("up did not exit cleanly")
	}
	for _, log := range []string{c.log, filepath.Join(d.Dir, "containerd.log")} {
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(token)) {
			t.Errorf("%s holds the secret's plaintext", log)
		}
	}
}
