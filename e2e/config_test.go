package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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

	oneLineError(t, c.run("deploy", "testdata/greet.wasm", "--name", "fn", "--route", "/fn", "--config-files", "files-cfg"),
		"config and secret files are not mounted for HTTP functions yet")
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
