package controlplane_test

import (
	"context"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// State: a deploy that mounts a volume, stored after `volume rm` has
// found no workload using it and before it removes it, fails the removal
// (its transaction is guarded on the workloads it read), which looks
// again and refuses: the volume and its data stay for the new user. The
// same for a config and a secret a deploy starts to use meanwhile.
func TestRemovalRacingADeployOfAUserIsRefused(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hello := readModule(t, "volcounter.wasm")
	digest := blobs.Digest(hello)
	if err := upload(ctx, t, c.control, hello, digest); err != nil {
		t.Fatal(err)
	}
	registerNode(ctx, t, c, "n1")
	withVolume := &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 1, Volumes: []*v1.VolumeMount{{Name: "data", Path: "/data"}}}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "first", Spec: withVolume}); err != nil {
		t.Fatal(err)
	}
	waitBound(t, c, "first", 1) // its binding creates the volume on n1
	vol, err := c.control.GetVolume(ctx, &v1.GetVolumeRequest{Name: "data"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: "first"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "cfg", Data: map[string]string{"A": "1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.SetSecret(ctx, &v1.SetSecretRequest{Name: "sec", Data: map[string]string{"S": "2"}}); err != nil {
		t.Fatal(err)
	}

	// In the window of each removal, once, a workload that uses what it
	// removes is deployed.
	users := map[string]*v1.WorkloadSpec{
		"volume": withVolume,
		"config": {ModuleDigest: digest, Replicas: 0, Configs: []string{"cfg"}},
		"secret": {ModuleDigest: digest, Replicas: 0, Secrets: []string{"sec"}},
	}
	controlplane.SetUsersCheckedHook(c.srv, func(kind, name string) {
		spec, ok := users[kind]
		if !ok {
			return
		}
		delete(users, kind)
		if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "second-" + kind, Spec: spec}); err != nil {
			t.Errorf("deploying a user of %s %s in the window: %v", kind, name, err)
		}
	})
	defer controlplane.SetUsersCheckedHook(c.srv, nil)

	_, err = c.control.DeleteVolume(ctx, &v1.DeleteVolumeRequest{Name: "data"})
	if err = errdefs.FromGRPC(err); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), `volume "data" is mounted by workload second-volume`) {
		t.Errorf("volume rm racing a deploy that mounts it: %v; want it refused, naming the new user", err)
	}
	if now, err := c.control.GetVolume(ctx, &v1.GetVolumeRequest{Name: "data"}); err != nil || now.GetVolume().GetUid() != vol.GetVolume().GetUid() {
		t.Errorf("the volume after the race: %v, %v; want it kept, uid %s", now, err, vol.GetVolume().GetUid())
	}
	_, err = c.control.DeleteConfig(ctx, &v1.DeleteConfigRequest{Name: "cfg"})
	if err = errdefs.FromGRPC(err); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), `config "cfg" is used by workload second-config`) {
		t.Errorf("config delete racing a deploy that uses it: %v; want it refused", err)
	}
	_, err = c.control.DeleteSecret(ctx, &v1.DeleteSecretRequest{Name: "sec"})
	if err = errdefs.FromGRPC(err); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), `secret "sec" is used by workload second-secret`) {
		t.Errorf("secret delete racing a deploy that uses it: %v; want it refused", err)
	}
	if len(users) != 0 {
		t.Fatalf("the removals did not all reach their window: %v left", users)
	}

	// Unused, they go.
	for _, kind := range []string{"volume", "config", "secret"} {
		if _, err := c.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: "second-" + kind}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.control.DeleteVolume(ctx, &v1.DeleteVolumeRequest{Name: "data"}); err != nil {
		t.Errorf("volume rm once unused: %v", err)
	}
	if _, err := c.control.DeleteConfig(ctx, &v1.DeleteConfigRequest{Name: "cfg"}); err != nil {
		t.Errorf("config delete once unused: %v", err)
	}
	if _, err := c.control.DeleteSecret(ctx, &v1.DeleteSecretRequest{Name: "sec"}); err != nil {
		t.Errorf("secret delete once unused: %v", err)
	}
	_, err = c.control.DeleteConfig(ctx, &v1.DeleteConfigRequest{Name: "cfg"})
	if !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		t.Errorf("deleting a config twice: %v, want NotFound", err)
	}
}

// Configs: the other direction. A deploy that names a config (or a
// secret) checks that it exists, then stores the workload; a `config
// delete` that lands in between (it finds no user yet) fails the
// deploy's write, which is guarded on what it checked: its retry finds
// the config gone and refuses in one line, and no workload is stored that
// references a missing config.
func TestDeployRacingADeleteOfItsConfigIsRefused(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	digest := uploadModule(ctx, t, c, "hello.wasm")
	if _, err := c.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "cfg", Data: map[string]string{"A": "1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.SetSecret(ctx, &v1.SetSecretRequest{Name: "sec", Data: map[string]string{"S": "2"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kind, name string
		spec       *v1.WorkloadSpec
		remove     func() error
		want       string
	}{
		{"config", "uses-cfg", &v1.WorkloadSpec{ModuleDigest: digest, ConfigFiles: []string{"cfg"}},
			func() error { _, err := c.control.DeleteConfig(ctx, &v1.DeleteConfigRequest{Name: "cfg"}); return err },
			`config "cfg" does not exist; create it first`},
		{"secret", "uses-sec", &v1.WorkloadSpec{ModuleDigest: digest, Secrets: []string{"sec"}},
			func() error { _, err := c.control.DeleteSecret(ctx, &v1.DeleteSecretRequest{Name: "sec"}); return err },
			`secret "sec" does not exist; create it first`},
	} {
		// In the deploy's window, once: the delete, which finds no user.
		removed := 0
		controlplane.SetRouteCheckedHook(c.srv, func() {
			if removed++; removed == 1 {
				if err := tc.remove(); err != nil {
					t.Errorf("deleting the %s in the deploy's window: %v", tc.kind, err)
				}
			}
		})
		_, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: tc.name, Spec: tc.spec})
		controlplane.SetRouteCheckedHook(c.srv, nil)
		if removed == 0 {
			t.Fatalf("the deploy using the %s never reached its window", tc.kind)
		}
		if err = errdefs.FromGRPC(err); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("a deploy whose %s was deleted in its window: %v; want it refused: %s", tc.kind, err, tc.want)
		}
		if _, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: tc.name}); !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
			t.Errorf("workload %s after the race: %v; want it not stored", tc.name, err)
		}
	}
}
