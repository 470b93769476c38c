package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
)

var digestLine = regexp.MustCompile(`^sha256:[0-9a-f]{64}\n$`)

// push runs `wasmorch push` with env and returns the digest it printed.
func push(t *testing.T, env []string, args ...string) string {
	t.Helper()
	r := run(t, env, append([]string{"push"}, args...)...)
	if r.code != 0 || !digestLine.MatchString(r.stdout) {
		t.Fatalf("want push to print a digest\n%s", r)
	}
	return strings.TrimSpace(r.stdout)
}

// describeSource is the Source line of `describe workload NAME`.
func (c *cluster) describeSource(name string) string {
	c.t.Helper()
	out := c.mustRun("describe", "workload", name).stdout
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Source:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "Source:"))
		}
	}
	c.t.Fatalf("describe workload %s has no Source line:\n%s", name, out)
	return ""
}

// runningIDs is the IDs of the workload's Running instances.
func (c *cluster) runningIDs(name string) []string {
	var ids []string
	for _, i := range c.instances(name) {
		if i.State == "Running" {
			ids = append(ids, i.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// TestRegistryPrivateTLS runs wasmorch against a private registry (TLS
// with a CA of the test's own, basic auth): push, deploy by tag and by
// digest, a tag moved after deploy, credentials absent, wrong and right,
// bad references, and instances that keep running and restart while the
// registry is down.
func TestRegistryPrivateTLS(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t, registryOptions{tls: true, auth: true})
	c := startUp(t)
	pushEnv := cliEnv(t, "DOCKER_CONFIG="+reg.dockerConfig(reg.user, reg.password))
	tag := reg.addr + "/app:1"

	t.Run("push needs the CA and credentials", func(t *testing.T) {
		oneLineError(t, run(t, pushEnv, "push", "testdata/ticker.wasm", tag), "is not trusted")
		noCreds := cliEnv(t, "DOCKER_CONFIG="+t.TempDir())
		oneLineError(t, run(t, noCreds, "push", "testdata/ticker.wasm", tag, "--ca-file", reg.ca), "wants credentials")
		oneLineError(t, run(t, pushEnv, "push", "testdata/garbage.wasm", tag, "--ca-file", reg.ca), "not a valid WebAssembly module")
	})

	first := push(t, pushEnv, "testdata/ticker.wasm", tag, "--ca-file", reg.ca)
	if again := push(t, pushEnv, "testdata/ticker.wasm", tag, "--ca-file", reg.ca); again != first {
		t.Errorf("pushing the same module again gave %s, then %s", first, again)
	}

	t.Run("credentials absent, then wrong", func(t *testing.T) {
		cc := c.with(t)
		oneLineError(t, cc.run("deploy", "oci://"+tag, "--name", "app"), "is not trusted")
		login := cc.run("registry", "login", reg.addr, "--ca-file", reg.ca)
		if login.code != 0 || !strings.Contains(login.stdout, "registry-127-0-0-1-") {
			t.Fatalf("registry login with a CA only:\n%s", login)
		}
		oneLineError(t, cc.run("deploy", "oci://"+tag, "--name", "app"), "wants credentials; run 'wasmorch registry login "+reg.addr)
		wrong := append(slices.Clone(cc.env), "DOCKER_CONFIG="+reg.dockerConfig(reg.user, "wrong"))
		if r := run(t, wrong, "registry", "login", reg.addr, "--docker-config", "--ca-file", reg.ca, "--server", cc.api); r.code != 0 {
			t.Fatalf("registry login --docker-config:\n%s", r)
		}
		oneLineError(t, cc.run("deploy", "oci://"+tag, "--name", "app"), `refused the credentials of "ci"`)
		if ws := cc.workloads(); len(ws) != 0 {
			t.Errorf("failed deploys left workloads: %s", toJSON(ws))
		}
	})

	if r := runIn(t, c.env, reg.password+"\n", "registry", "login", reg.addr, "--username", reg.user, "--password-stdin", "--ca-file", reg.ca, "--server", c.api); r.code != 0 {
		t.Fatalf("registry login:\n%s", r)
	}
	if r := c.mustRun("secret", "get", "registry-"+strings.NewReplacer(".", "-", ":", "-").Replace(reg.addr)); strings.Contains(r.stdout, reg.password) {
		t.Errorf("secret get shows the registry password:\n%s", r)
	}
	if r := c.mustRun("registry", "list"); !strings.Contains(r.stdout, "password") {
		t.Errorf("registry list does not list the login's keys:\n%s", r)
	}

	// By tag: the workload records the reference and the digest.
	c.mustRun("deploy", "oci://"+tag, "--name", "app", "--replicas", "2")
	if got := c.describeSource("app"); got != "oci://"+tag+" ("+first+")" {
		t.Errorf("describe shows source %q, want oci://%s (%s)", got, tag, first)
	}
	running := c.runningIDs("app")
	if len(running) != 2 {
		t.Fatalf("want 2 running instances of app, got %v", running)
	}

	// The tag moves: nothing running changes until the next deploy.
	second := push(t, pushEnv, withCustomSection(t, "testdata/ticker.wasm", "v2"), tag, "--ca-file", reg.ca)
	if second == first {
		t.Fatal("a different module pushed with the same digest")
	}
	if got := c.describeSource("app"); !strings.Contains(got, first) {
		t.Errorf("after the tag moved, describe shows source %q, want digest %s", got, first)
	}
	if ids := c.runningIDs("app"); !slices.Equal(ids, running) {
		t.Errorf("the tag moved and the instances changed: %v, then %v", running, ids)
	}
	c.mustRun("deploy", "oci://"+tag, "--name", "app", "--replicas", "2")
	if got := c.describeSource("app"); !strings.Contains(got, second) {
		t.Errorf("after deploying the moved tag, describe shows source %q, want digest %s", got, second)
	}

	// By digest, in both spellings: back to the first module.
	byDigest := reg.addr + "/app@" + first
	c.mustRun("deploy", byDigest, "--name", "app", "--replicas", "2")
	if got := c.describeSource("app"); got != "oci://"+byDigest+" ("+first+")" {
		t.Errorf("deployed by digest, describe shows source %q", got)
	}
	c.mustRun("deploy", "oci://"+reg.addr+"/app@"+second, "--name", "app", "--replicas", "2")
	hist := c.mustRun("rollout", "history", "app").stdout
	for _, want := range []string{"SOURCE", "DIGEST", "oci://" + tag, first, second, "oci://" + byDigest} {
		if !strings.Contains(hist, want) {
			t.Errorf("rollout history does not show %q:\n%s", want, hist)
		}
	}

	t.Run("bad references change nothing", func(t *testing.T) {
		cc := c.with(t)
		oneLineError(t, cc.run("deploy", "oci://"+reg.addr+"/app:nope", "--name", "nope"), "oci://"+reg.addr+"/app:nope: no such tag or digest")
		oneLineError(t, cc.run("deploy", "oci://"+reg.addr+"/absent:1", "--name", "nope"), "oci://"+reg.addr+"/absent:1: no such")
		unknown := "sha256:" + strings.Repeat("0", 64)
		oneLineError(t, cc.run("deploy", "oci://"+reg.addr+"/app@"+unknown, "--name", "nope"), "no such tag or digest")

		// A module the registry serves with other bytes than its digest.
		corrupt := reg.addr + "/corrupt:1"
		push(t, pushEnv, withCustomSection(t, "testdata/ticker.wasm", "corrupt"), corrupt, "--ca-file", reg.ca)
		layer := withCustomSection(t, "testdata/ticker.wasm", "corrupt")
		data, err := os.ReadFile(layer)
		if err != nil {
			t.Fatal(err)
		}
		blob := reg.blobFile(sha256Hex(data))
		copy(data[len(data)-7:], "CORRUPT")
		if err := os.WriteFile(blob, data, 0o644); err != nil {
			t.Fatal(err)
		}
		oneLineError(t, cc.run("deploy", "oci://"+corrupt, "--name", "nope"), "oci://"+corrupt+": digest mismatch")

		// An artifact that is neither a module nor an image.
		other := reg.addr + "/chart:1"
		pushOtherArtifact(t, reg, other)
		oneLineError(t, cc.run("deploy", "oci://"+other, "--name", "nope"), "oci://"+other+": it is neither a Wasm module nor a container image")

		// A registry that accepts connections and never answers.
		hang := hangingRegistry(t)
		oneLineError(t, cc.run("deploy", "oci://"+hang+"/app:1", "--name", "nope", "--timeout", "2s"), "oci://"+hang+"/app:1: "+hang+" did not answer")

		if ws := cc.workloads(); len(ws) != 1 || ws[0].Name != "app" {
			t.Errorf("bad references changed the workloads: %s", toJSON(ws))
		}
	})

	// The registry goes down: instances keep running, and come back from
	// the control plane's blob store when the cluster restarts.
	running = c.runningIDs("app")
	gen := c.workloads()[0].Generation
	reg.stop()
	oneLineError(t, c.run("deploy", "oci://"+tag, "--name", "app", "--replicas", "2"), "refuses connections")
	if ids := c.runningIDs("app"); !slices.Equal(ids, running) {
		t.Errorf("with the registry down the instances changed: %v, then %v", running, ids)
	}
	if g := c.workloads()[0].Generation; g != gen {
		t.Errorf("a failed pull changed the generation: %d, then %d", gen, g)
	}
	if code := c.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("up exited %d", code)
	}
	c = startUpAt(t, c.dataDir, c.api, c.http)
	eventually(t, "app back with 2 running instances, the registry down", func() (bool, string) {
		is := c.instances("app")
		return len(c.runningIDs("app")) == 2, toJSON(is)
	})
	reg.restart()
}

// TestRegistryPlainHTTP: plain HTTP is refused until a login allows it
// for that registry, even on a loopback address.
func TestRegistryPlainHTTP(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t, registryOptions{})
	c := startUp(t)
	ref := reg.addr + "/hello:1"
	oneLineError(t, run(t, c.env, "push", "testdata/ticker.wasm", ref), "plain HTTP is not allowed")
	digest := push(t, c.env, "testdata/ticker.wasm", ref, "--plain-http")
	oneLineError(t, c.run("deploy", "oci://"+ref, "--name", "hello"), "plain HTTP is not allowed for it; run 'wasmorch registry login "+reg.addr+" --plain-http'")
	c.mustRun("registry", "login", reg.addr, "--plain-http")
	c.mustRun("deploy", "oci://"+ref, "--name", "hello")
	if got := c.describeSource("hello"); got != "oci://"+ref+" ("+digest+")" {
		t.Errorf("describe shows source %q", got)
	}

	// A manifest's module: takes the reference; get -o yaml gives it back.
	manifest := filepath.Join(t.TempDir(), "app.yaml")
	doc := "apiVersion: wasmorch.dev/v1\nkind: Workload\nmetadata:\n  name: fromyaml\nspec:\n  module: oci://" + ref + "\n"
	if err := os.WriteFile(manifest, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustRun("apply", "-f", manifest)
	if got := c.describeSource("fromyaml"); got != "oci://"+ref+" ("+digest+")" {
		t.Errorf("applied from a manifest, describe shows source %q", got)
	}
	exported := c.mustRun("get", "workloads", "fromyaml", "-o", "yaml").stdout
	if !strings.Contains(exported, "module: oci://"+ref) {
		t.Errorf("get -o yaml does not give the reference back:\n%s", exported)
	}
	if err := os.WriteFile(manifest, []byte(exported), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := c.mustRun("apply", "-f", manifest); r.stdout != "workload/fromyaml unchanged\n" {
		t.Errorf("applying the exported manifest: %q, want unchanged", r.stdout)
	}

	c.mustRun("registry", "logout", reg.addr)
	oneLineError(t, c.run("registry", "logout", reg.addr), "no registry login for "+reg.addr)
}
