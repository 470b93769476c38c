package api

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// checkReferences fails unless every config and secret spec names exists,
// and returns what the transaction that stores the workload must compare
// so that none of them is deleted between this check and the write (a
// 'config delete' in between fails the write, whose retry checks again
// and refuses): the delete side guards on the users it read (users).
func (s *Server) checkReferences(ctx context.Context, spec *v1.WorkloadSpec) ([]clientv3.Cmp, error) {
	var guards []clientv3.Cmp
	for _, n := range slices.Concat(spec.GetConfigs(), spec.GetConfigFiles()) {
		if _, err := s.store.Configs.Get(ctx, n); errdefs.IsNotFound(err) {
			return nil, errdefs.Preconditionf("config %q does not exist; create it first ('wasmorch config set %s KEY=VALUE...')", n, n)
		} else if err != nil {
			return nil, err
		}
		guards = append(guards, clientv3.Compare(clientv3.CreateRevision(s.store.Configs.Key(n)), ">", 0))
	}
	for _, n := range slices.Concat(spec.GetSecrets(), spec.GetSecretFiles()) {
		if _, err := s.store.Secrets.Get(ctx, n); errdefs.IsNotFound(err) {
			return nil, errdefs.Preconditionf("secret %q does not exist; create it first ('wasmorch secret set %s KEY=VALUE...')", n, n)
		} else if err != nil {
			return nil, err
		}
		guards = append(guards, clientv3.Compare(clientv3.CreateRevision(s.store.Secrets.Key(n)), ">", 0))
	}
	return guards, nil
}

// users returns the workloads that reference the config (secret false) or
// secret called name, from the member's cache once it holds every write
// acknowledged before (the caller's writes are guarded by their mod
// revisions).
func (s *Server) users(ctx context.Context, name string, secret bool) ([]store.Versioned[*v1.Workload], error) {
	if err := s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	var wls []cache.Workload
	s.cache.Read(func(r cache.Reader) {
		if secret {
			wls = r.SecretUsers(name)
		} else {
			wls = r.ConfigUsers(name)
		}
	})
	out := make([]store.Versioned[*v1.Workload], len(wls))
	for i, w := range wls {
		out[i] = store.Versioned[*v1.Workload]{Name: w.Value.GetName(), Value: w.Value, ModRevision: w.ModRevision}
	}
	return out, nil
}

// rollOps bumps the generation of every workload in users, guarded by
// their mod revisions, so that their instances are replaced by ones that
// see the new values.
func (s *Server) rollOps(ctx context.Context, kind, name string, users []store.Versioned[*v1.Workload]) ([]clientv3.Cmp, []clientv3.Op, []string, error) {
	var (
		cmps  []clientv3.Cmp
		ops   []clientv3.Op
		names []string
	)
	now := time.Now().UnixNano()
	for _, u := range users {
		wl := proto.Clone(u.Value).(*v1.Workload)
		wl.Generation++
		wl.UpdatedUnixNano = now
		op, err := s.store.Workloads.PutOp(u.Name, wl)
		if err != nil {
			return nil, nil, nil, err
		}
		cmps = append(cmps, s.store.Workloads.Unchanged(u.Name, u.ModRevision))
		ops = append(ops, op)
		names = append(names, u.Name)
		// rollouts: the new generation's revision, in the same transaction
		rcmps, rops, err := s.revisionOps(ctx, wl, fmt.Sprintf("%s %s changed", kind, name))
		if err != nil {
			return nil, nil, nil, err
		}
		cmps, ops = append(cmps, rcmps...), append(ops, rops...)
	}
	return cmps, ops, names, nil
}

// guardOf is the comparison that a record read at modRev (0: absent) is
// still as read.
func guardOf(key string, modRev int64) clientv3.Cmp {
	if modRev == 0 {
		return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", modRev)
}

// putRolling writes put (guarded by guard and extra) and rolls users in
// one transaction; ErrConflict when anything changed since it was read.
func (s *Server) putRolling(ctx context.Context, kind, name string, guard clientv3.Cmp, put clientv3.Op, users []store.Versioned[*v1.Workload], extra ...clientv3.Cmp) ([]string, error) {
	cmps, ops, rolled, err := s.rollOps(ctx, kind, name, users)
	if err != nil {
		return nil, err
	}
	if len(ops)+1 > store.MaxOpsPerTxn {
		return nil, errdefs.Preconditionf("%s %s is used by %d workloads, more than one change can roll (%d)", kind, name, len(users), store.MaxOpsPerTxn-1)
	}
	resp, err := s.store.Client.Txn(ctx).If(append(append(cmps, guard), extra...)...).Then(append(ops, put)...).Commit()
	if err != nil {
		return nil, store.EtcdError(fmt.Sprintf("write %s %s", kind, name), err)
	}
	if !resp.Succeeded {
		return nil, errdefs.Conflictf("%s %s or a workload using it changed meanwhile; try again", kind, name)
	}
	for _, w := range rolled {
		if err := s.events.Record(ctx, "workload/"+w, "ConfigChanged", "%s %s changed: replacing the instances", kind, name); err != nil {
			s.log.Debug("recording an event failed", "workload", w, "err", err)
		}
	}
	return rolled, nil
}

// SetConfig creates a config or replaces its data; a change rolls the
// workloads that use it.
func (a *controlAPI) SetConfig(ctx context.Context, req *v1.SetConfigRequest) (*v1.SetConfigResponse, error) {
	name, data := req.GetName(), req.GetData()
	if err := workloads.ValidateObjectName("config", name); err != nil {
		return nil, err
	}
	if err := workloads.ValidateData("config", name, data); err != nil {
		return nil, err
	}
	if data == nil {
		data = map[string]string{}
	}
	for attempt := 0; ; attempt++ {
		cur, err := a.s.store.Configs.Get(ctx, name)
		exists := err == nil
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, err
		}
		now := time.Now().UnixNano()
		cfg := &v1.Config{Name: name, Data: data, CreatedUnixNano: now, UpdatedUnixNano: now}
		if exists {
			if maps.Equal(cur.Value.GetData(), data) {
				return &v1.SetConfigResponse{Config: cur.Value}, nil
			}
			cfg.CreatedUnixNano = cur.Value.GetCreatedUnixNano()
		}
		if req.GetDryRun() {
			return &v1.SetConfigResponse{Config: cfg, Created: !exists, Changed: true}, nil
		}
		users, err := a.s.users(ctx, name, false)
		if err != nil {
			return nil, err
		}
		put, err := a.s.store.Configs.PutOp(name, cfg)
		if err != nil {
			return nil, err
		}
		rolled, err := a.s.putRolling(ctx, "config", name, guardOf(a.s.store.Configs.Key(name), cur.ModRevision), put, users)
		if errdefs.IsConflict(err) && attempt < 5 {
			continue
		} else if err != nil {
			return nil, err
		}
		a.s.log.Info("config set", "config", name, "keys", len(data), "rolled", rolled)
		return &v1.SetConfigResponse{Config: cfg, Created: !exists, Changed: true, Rolled: rolled}, nil
	}
}

func (a *controlAPI) GetConfig(ctx context.Context, req *v1.GetConfigRequest) (*v1.Config, error) {
	cur, err := a.s.store.Configs.Get(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return cur.Value, nil
}

func (a *controlAPI) ListConfigs(ctx context.Context, _ *v1.ListConfigsRequest) (*v1.ListConfigsResponse, error) {
	list, _, err := a.s.store.Configs.List(ctx)
	if err != nil {
		return nil, err
	}
	resp := &v1.ListConfigsResponse{}
	for _, c := range list {
		resp.Configs = append(resp.Configs, c.Value)
	}
	return resp, nil
}

// DeleteConfig removes a config no workload uses.
func (a *controlAPI) DeleteConfig(ctx context.Context, req *v1.DeleteConfigRequest) (*v1.DeleteConfigResponse, error) {
	return &v1.DeleteConfigResponse{}, a.s.deleteUnused(ctx, "config", req.GetName(), a.s.store.Configs.Key(req.GetName()), false)
}

// deleteUnused deletes the config or secret at key unless a workload
// references it. The users are read from the cache, and the deletion is
// guarded on them in its transaction (workloadsUnchangedSince, storage.go),
// so that a deploy that references it, stored meanwhile, fails the
// deletion, which looks again.
func (s *Server) deleteUnused(ctx context.Context, kind, name, key string, secret bool) error {
	for attempt := 0; ; attempt++ {
		if err := s.cache.Sync(ctx); err != nil {
			return err
		}
		var names []string
		var rev int64
		s.cache.Read(func(r cache.Reader) {
			rev = r.Rev()
			users := r.ConfigUsers(name)
			if secret {
				users = r.SecretUsers(name)
			}
			for _, u := range users {
				names = append(names, u.Value.GetName())
			}
		})
		if len(names) > 0 {
			return errdefs.Preconditionf("%s %q is used by workload %s; deploy them without --from-%s %s or delete them first", kind, name, strings.Join(names, ", "), kind, name)
		}
		if s.usersChecked != nil {
			s.usersChecked(kind, name)
		}
		resp, err := s.store.Client.Txn(ctx).If(s.workloadsUnchangedSince(rev)).Then(clientv3.OpDelete(key)).Commit()
		if err != nil {
			return errdefs.Unavailablef("delete %s %s: %v", kind, name, err)
		}
		if !resp.Succeeded {
			if attempt == maxUserChecks-1 {
				return errdefs.Conflictf("the workloads changed meanwhile, %d times, while deleting %s %q; try again", maxUserChecks, kind, name)
			}
			continue
		}
		if resp.Responses[0].GetResponseDeleteRange().GetDeleted() == 0 {
			return errdefs.NotFoundf("%s %q not found", kind, name)
		}
		s.log.Info(kind+" deleted", kind, name)
		return nil
	}
}

// secretView is what the API shows of a secret: never its values.
func secretView(s *v1.Secret) *v1.SecretView {
	return &v1.SecretView{Name: s.GetName(), Keys: s.GetKeys(), Digest: s.GetDigest(), KeyId: s.GetKeyId(),
		CreatedUnixNano: s.GetCreatedUnixNano(), UpdatedUnixNano: s.GetUpdatedUnixNano()}
}

// changedKeys lists the keys added, removed or changed from old to new.
func changedKeys(old, new map[string]string) []string {
	var out []string
	for k, v := range new {
		if ov, ok := old[k]; !ok || ov != v {
			out = append(out, k)
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// SetSecret creates a secret or replaces its data, sealed; a change rolls
// the workloads that use it.
func (a *controlAPI) SetSecret(ctx context.Context, req *v1.SetSecretRequest) (*v1.SetSecretResponse, error) {
	name, data := req.GetName(), req.GetData()
	if err := workloads.ValidateObjectName("secret", name); err != nil {
		return nil, err
	}
	if err := workloads.ValidateData("secret", name, data); err != nil {
		return nil, err
	}
	if data == nil {
		data = map[string]string{}
	}
	for attempt := 0; ; attempt++ {
		cur, err := a.s.store.Secrets.Get(ctx, name)
		exists := err == nil
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, err
		}
		now := time.Now().UnixNano()
		sec := &v1.Secret{Name: name, CreatedUnixNano: now, UpdatedUnixNano: now}
		var old map[string]string
		if exists {
			if old, err = a.s.secrets.Open(ctx, cur.Value); err != nil {
				return nil, err
			}
			if maps.Equal(old, data) {
				return &v1.SetSecretResponse{Secret: secretView(cur.Value)}, nil
			}
			sec.CreatedUnixNano = cur.Value.GetCreatedUnixNano()
		}
		changed := changedKeys(old, data)
		if req.GetDryRun() {
			sec.Keys = slices.Sorted(maps.Keys(data))
			return &v1.SetSecretResponse{Secret: secretView(sec), Created: !exists, Changed: true, ChangedKeys: changed}, nil
		}
		if err := a.s.secrets.Seal(ctx, sec, data); err != nil {
			return nil, err
		}
		users, err := a.s.users(ctx, name, true)
		if err != nil {
			return nil, err
		}
		put, err := a.s.store.Secrets.PutOp(name, sec)
		if err != nil {
			return nil, err
		}
		// Its data key must not have been pruned since it sealed it.
		rolled, err := a.s.putRolling(ctx, "secret", name, guardOf(a.s.store.Secrets.Key(name), cur.ModRevision), put, users, a.s.secrets.KeyPresent(sec.GetKeyId()))
		if errdefs.IsConflict(err) && attempt < 5 {
			continue
		} else if err != nil {
			return nil, err
		}
		a.s.log.Info("secret set", "secret", name, "keys", len(data), "rolled", rolled)
		return &v1.SetSecretResponse{Secret: secretView(sec), Created: !exists, Changed: true, Rolled: rolled, ChangedKeys: changed}, nil
	}
}

func (a *controlAPI) GetSecret(ctx context.Context, req *v1.GetSecretRequest) (*v1.SecretView, error) {
	cur, err := a.s.store.Secrets.Get(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return secretView(cur.Value), nil
}

func (a *controlAPI) ListSecrets(ctx context.Context, _ *v1.ListSecretsRequest) (*v1.ListSecretsResponse, error) {
	list, _, err := a.s.store.Secrets.List(ctx)
	if err != nil {
		return nil, err
	}
	resp := &v1.ListSecretsResponse{}
	for _, c := range list {
		resp.Secrets = append(resp.Secrets, secretView(c.Value))
	}
	return resp, nil
}

// DeleteSecret removes a secret no workload uses.
func (a *controlAPI) DeleteSecret(ctx context.Context, req *v1.DeleteSecretRequest) (*v1.DeleteSecretResponse, error) {
	return &v1.DeleteSecretResponse{}, a.s.deleteUnused(ctx, "secret", req.GetName(), a.s.store.Secrets.Key(req.GetName()), true)
}

// resolveEnv gives every instance that references configs or secrets a
// copy whose spec carries their keys as environment variables (configs in
// order, then secrets, then the spec's own env, a later one winning) and
// as files (config_files, secret_files). It runs on the member sending a
// node its assignments, so secret values travel only over that node's
// mutual-TLS session and are never stored in plaintext. The configs and
// secrets come from the member's cache, as the instances do; the
// instances' own records are shared and left untouched.
func (s *Server) resolveEnv(ctx context.Context, insts []*v1.Instance) error {
	configNames, secretNames := map[string]bool{}, map[string]bool{}
	for _, inst := range insts {
		spec := inst.GetSpec()
		for _, names := range [][]string{spec.GetConfigs(), spec.GetConfigFiles()} {
			for _, n := range names {
				configNames[n] = true
			}
		}
		for _, names := range [][]string{spec.GetSecrets(), spec.GetSecretFiles()} {
			for _, n := range names {
				secretNames[n] = true
			}
		}
	}
	if len(configNames)+len(secretNames) == 0 {
		return nil
	}
	configs := make(map[string]map[string]string, len(configNames))
	sealed := make(map[string]*v1.Secret, len(secretNames))
	s.cache.Read(func(r cache.Reader) {
		for n := range configNames {
			if c, ok := r.Config(n); ok {
				configs[n] = c.Value.GetData()
			}
		}
		for n := range secretNames {
			if sec, ok := r.Secret(n); ok {
				sealed[n] = sec.Value
			}
		}
	})
	secrets := make(map[string]map[string]string, len(sealed))
	for n := range secretNames {
		sec, ok := sealed[n]
		if !ok {
			s.log.Warn("an instance references a missing secret", "secret", n)
			continue
		}
		data, err := s.secrets.Open(ctx, sec)
		if err != nil {
			return err
		}
		secrets[n] = data
	}
	for n := range configNames {
		if _, ok := configs[n]; !ok {
			s.log.Warn("an instance references a missing config", "config", n)
		}
	}
	for i, inst := range insts {
		spec := inst.GetSpec()
		if len(spec.GetConfigs())+len(spec.GetSecrets())+len(spec.GetConfigFiles())+len(spec.GetSecretFiles()) == 0 {
			continue
		}
		var env []*v1.EnvVar
		index := map[string]int{}
		add := func(k, v string) {
			if j, ok := index[k]; ok {
				env[j].Value = v
				return
			}
			index[k] = len(env)
			env = append(env, &v1.EnvVar{Name: k, Value: v})
		}
		var files []*v1.MountedFile
		for _, src := range []struct {
			names []string
			data  map[string]map[string]string
			dir   string // "": environment variables
		}{
			{spec.GetConfigs(), configs, ""},
			{spec.GetSecrets(), secrets, ""},
			{spec.GetConfigFiles(), configs, "/config/"},
			{spec.GetSecretFiles(), secrets, "/secrets/"},
		} {
			for _, n := range src.names {
				data := src.data[n]
				for _, k := range slices.Sorted(maps.Keys(data)) {
					if src.dir == "" {
						add(k, data[k])
					} else {
						files = append(files, &v1.MountedFile{Path: src.dir + n + "/" + k, Data: []byte(data[k])})
					}
				}
			}
		}
		for _, e := range spec.GetEnv() {
			add(e.GetName(), e.GetValue())
		}
		c := proto.Clone(inst).(*v1.Instance)
		c.Spec.Env, c.Spec.Files = env, files
		insts[i] = c
	}
	return nil
}

// RotateSecretKey makes a new data key current and re-encrypts every
// secret under it.
func (a *controlAPI) RotateSecretKey(ctx context.Context, _ *v1.RotateSecretKeyRequest) (*v1.RotateSecretKeyResponse, error) {
	s := a.s
	id, n, err := s.secrets.Rotate(ctx)
	if err != nil {
		return nil, err
	}
	s.log.Info("rotated the secrets data key", "key", id, "secrets", n)
	// The rotation is done; keys left behind go at the next one.
	if pruned, err := s.secrets.Prune(ctx); err != nil {
		s.log.Warn("could not delete the secret data keys no secret uses; the next rotation tries again", "err", err)
	} else if len(pruned) > 0 {
		s.log.Info("deleted secret data keys no secret uses", "keys", pruned)
	}
	return &v1.RotateSecretKeyResponse{KeyId: id, Secrets: n}, nil
}
