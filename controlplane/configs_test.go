package controlplane_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The session a node receives carries its instances' configs and secrets
// as environment variables, in order (configs, secrets, the spec's env),
// and a changed config gives the workload a new generation.
func TestSessionResolvesConfigsAndSecretsAndAChangeRolls(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	hello := readModule(t, "hello.wasm")
	digest := blobs.Digest(hello)
	if err := upload(ctx, t, c.control, hello, digest); err != nil {
		t.Fatal(err)
	}
	if _, err := c.agent.Register(ctx, &v1.RegisterRequest{Node: &v1.Node{
		Name: "n1", Address: "127.0.0.1:1", Arch: "amd64", Os: "linux", Runtimes: []string{"wasm"},
		Capacity: &v1.Resources{MemoryBytes: 1 << 30, Instances: 100},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "cfg", Data: map[string]string{"A": "config", "B": "config", "C": "config"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.SetSecret(ctx, &v1.SetSecretRequest{Name: "sec", Data: map[string]string{"B": "secret", "S": "s3cr3t"}}); err != nil {
		t.Fatal(err)
	}
	spec := &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 1, Configs: []string{"cfg"}, Secrets: []string{"sec"},
		Env: []*v1.EnvVar{{Name: "C", Value: "env"}}}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "w", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "bad", Spec: &v1.WorkloadSpec{ModuleDigest: digest, Configs: []string{"nope"}}}); !errdefs.IsFailedPrecondition(errdefs.FromGRPC(err)) {
		t.Fatalf("a workload naming a missing config: err = %v, want FailedPrecondition", err)
	}
	if _, err := c.control.DeleteConfig(ctx, &v1.DeleteConfigRequest{Name: "cfg"}); !errdefs.IsFailedPrecondition(errdefs.FromGRPC(err)) {
		t.Fatalf("deleting a config in use: err = %v, want FailedPrecondition", err)
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	session, err := c.agent.Session(sctx, &v1.SessionRequest{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for sctx.Err() == nil {
			_, _ = c.agent.Heartbeat(sctx, &v1.HeartbeatRequest{Node: "n1"})
			time.Sleep(200 * time.Millisecond)
		}
	}()
	// envOf waits for a set whose one instance is of generation gen.
	envOf := func(gen int64) []string {
		t.Helper()
		for range 200 {
			set, err := session.Recv()
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range set.GetInstances() {
				if in.GetGeneration() == gen {
					var env []string
					for _, e := range in.GetSpec().GetEnv() {
						env = append(env, e.GetName()+"="+e.GetValue())
					}
					return env
				}
			}
		}
		t.Fatalf("no instance of generation %d was sent", gen)
		return nil
	}
	if got, want := envOf(1), []string{"A=config", "B=secret", "C=env", "S=s3cr3t"}; !slices.Equal(got, want) {
		t.Fatalf("env = %v, want %v", got, want)
	}
	// The stored workload and instances hold names, never values.
	insts, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{Workload: "w"})
	if err != nil {
		t.Fatal(err)
	}
	for _, iv := range insts.GetInstances() {
		if len(iv.GetInstance().GetSpec().GetEnv()) != 1 {
			t.Fatalf("a stored instance holds resolved values: %v", iv.GetInstance().GetSpec().GetEnv())
		}
	}

	resp, err := c.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "cfg", Data: map[string]string{"A": "changed"}})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetChanged() || !slices.Equal(resp.GetRolled(), []string{"w"}) {
		t.Fatalf("SetConfig = %v, want changed and rolled [w]", resp)
	}
	if got, want := envOf(2), []string{"A=changed", "B=secret", "S=s3cr3t", "C=env"}; !slices.Equal(got, want) {
		t.Fatalf("env after the change = %v, want %v", got, want)
	}
	again, err := c.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "cfg", Data: map[string]string{"A": "changed"}})
	if err != nil || again.GetChanged() || len(again.GetRolled()) != 0 {
		t.Fatalf("setting the same data again: %v, %v; want unchanged", again, err)
	}

	// Rotation keeps the secret readable and unchanged.
	before, err := c.control.GetSecret(ctx, &v1.GetSecretRequest{Name: "sec"})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := c.control.RotateSecretKey(ctx, &v1.RotateSecretKeyRequest{})
	if err != nil || rot.GetSecrets() != 1 || rot.GetKeyId() == before.GetKeyId() {
		t.Fatalf("RotateSecretKey = %v, %v (key before %s)", rot, err, before.GetKeyId())
	}
	same, err := c.control.SetSecret(ctx, &v1.SetSecretRequest{Name: "sec", Data: map[string]string{"B": "secret", "S": "s3cr3t"}})
	if err != nil || same.GetChanged() || same.GetSecret().GetDigest() != before.GetDigest() || same.GetSecret().GetKeyId() != rot.GetKeyId() {
		t.Fatalf("after rotation: %v, %v; want unchanged, the same digest, key %s", same, err, rot.GetKeyId())
	}
}

// Config and secret files reach the node for every kind of workload — an
// HTTP function and a container here — only in its assignments, and a
// changed config rolls them all.
func TestFilesReachEveryKindAndAChangeRollsThem(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	hello := readModule(t, "hello.wasm")
	digest := blobs.Digest(hello)
	if err := upload(ctx, t, c.control, hello, digest); err != nil {
		t.Fatal(err)
	}
	if _, err := c.agent.Register(ctx, &v1.RegisterRequest{Node: &v1.Node{
		Name: "n1", Address: "127.0.0.1:1", Arch: "amd64", Os: "linux", Runtimes: []string{"wasm", "container"},
		Capacity: &v1.Resources{MemoryBytes: 1 << 30, Instances: 100},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "cfg", Data: map[string]string{"K": "one"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.SetSecret(ctx, &v1.SetSecretRequest{Name: "sec", Data: map[string]string{"S": "s3cr3t"}}); err != nil {
		t.Fatal(err)
	}
	for name, spec := range map[string]*v1.WorkloadSpec{
		"fn":  {ModuleDigest: digest, Replicas: 1, Http: &v1.HttpTrigger{Route: "/fn"}},
		"box": {Kind: "container", Image: "registry.example.com/team/api:1", Replicas: 1},
	} {
		spec.ConfigFiles, spec.SecretFiles = []string{"cfg"}, []string{"sec"}
		if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: spec}); err != nil {
			t.Fatalf("applying %s with config and secret files: %v", name, err)
		}
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	session, err := c.agent.Session(sctx, &v1.SessionRequest{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for sctx.Err() == nil {
			_, _ = c.agent.Heartbeat(sctx, &v1.HeartbeatRequest{Node: "n1"})
			time.Sleep(200 * time.Millisecond)
		}
	}()
	// filesOf waits for a set holding an instance of generation gen of
	// both workloads, and returns their files as "path=value".
	filesOf := func(gen int64) map[string][]string {
		t.Helper()
		for range 200 {
			set, err := session.Recv()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{}
			for _, in := range set.GetInstances() {
				if in.GetGeneration() != gen {
					continue
				}
				var files []string
				for _, f := range in.GetSpec().GetFiles() {
					files = append(files, f.GetPath()+"="+string(f.GetData()))
				}
				got[in.GetWorkload()] = files
			}
			if len(got) == 2 {
				return got
			}
		}
		t.Fatalf("no set with both workloads at generation %d was sent", gen)
		return nil
	}
	for w, files := range filesOf(1) {
		if want := []string{"/config/cfg/K=one", "/secrets/sec/S=s3cr3t"}; !slices.Equal(files, want) {
			t.Errorf("files of %s = %v, want %v", w, files, want)
		}
	}
	insts, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, iv := range insts.GetInstances() {
		if len(iv.GetInstance().GetSpec().GetFiles()) != 0 {
			t.Fatalf("a stored instance holds file values: %v", iv.GetInstance())
		}
	}

	resp, err := c.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "cfg", Data: map[string]string{"K": "two"}})
	if err != nil {
		t.Fatal(err)
	}
	if rolled := slices.Sorted(slices.Values(resp.GetRolled())); !slices.Equal(rolled, []string{"box", "fn"}) {
		t.Fatalf("SetConfig rolled %v, want box and fn", rolled)
	}
	for w, files := range filesOf(2) {
		if want := []string{"/config/cfg/K=two", "/secrets/sec/S=s3cr3t"}; !slices.Equal(files, want) {
			t.Errorf("files of %s after the change = %v, want %v", w, files, want)
		}
	}
}
