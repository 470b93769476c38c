package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// AddMember adds a member to the etcd cluster (as etcd's MemberAdd) and
// returns the initial cluster it must start with. Adding a member that was
// added but never started again is allowed, so that a join that failed
// half-way can be retried.
func (a *controlAPI) AddMember(ctx context.Context, req *v1.AddMemberRequest) (*v1.AddMemberResponse, error) {
	if err := workloads.ValidateNodeName(req.GetName()); err != nil {
		return nil, errdefs.Invalidf("invalid member name: %v", err)
	}
	u, err := url.Parse(req.GetPeerUrl())
	if err != nil || u.Host == "" || u.Scheme != "https" {
		return nil, errdefs.Invalidf("peer URL %q is not https://HOST:PORT (members speak TLS to each other; is the joining member of an older version?)", req.GetPeerUrl())
	}
	cli := a.s.store.Client
	list, err := cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list etcd members: %w", err)
	}
	joining := a.s.joining(ctx, list.Members)
	var id uint64
	for _, m := range list.Members {
		samePeer := containsString(m.PeerURLs, req.GetPeerUrl())
		switch {
		case m.Name == req.GetName():
			return nil, errdefs.Preconditionf("a member named %q is already in the cluster; remove it first ('wasmorch member remove %s') or choose another --name", m.Name, m.Name)
		case samePeer && m.Name == "":
			id = m.ID // added before, never started: retrying a join
		case samePeer:
			return nil, errdefs.Preconditionf("peer URL %s is already used by member %q", req.GetPeerUrl(), m.Name)
		case m.Name == "" && joining[m.ID] == req.GetName():
			// The same joiner, retrying with another peer URL (a free port):
			// its first attempt never started and goes.
			if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
				return nil, errdefs.Unavailablef("remove member %x, the unstarted first attempt of %q to join: %v", m.ID, req.GetName(), err)
			}
			_, _ = cli.Delete(ctx, joiningKey(m.ID))
			a.s.log.Info("removed the unstarted member of an earlier join attempt", "name", req.GetName(), "id", fmt.Sprintf("%x", m.ID), "peer", strings.Join(m.PeerURLs, ","))
		case m.Name == "":
			return nil, errdefs.Preconditionf("member %x (peer %s%s) was added but has not started; start it, or remove it ('wasmorch member remove %x') before adding another", m.ID, strings.Join(m.PeerURLs, ","), joiningAs(joining[m.ID]), m.ID)
		}
	}
	if id == 0 {
		// As a learner first: a learner does not count towards quorum, so
		// a member that fails to start or is slow to catch up cannot make
		// the cluster lose it. The joiner asks for promotion once in sync.
		resp, err := cli.MemberAddAsLearner(ctx, []string{req.GetPeerUrl()})
		if errors.Is(err, rpctypes.ErrUnhealthy) {
			// etcd adds a voting member only when every member has been
			// connected for a while (5 s): the joiner retries.
			return nil, errdefs.Unavailablef("etcd cannot add member %q yet: %v (a member joined or failed recently)", req.GetName(), err)
		}
		if err != nil {
			return nil, errdefs.Preconditionf("etcd refused to add member %q: %v", req.GetName(), err)
		}
		id = resp.Member.ID
		list.Members = resp.Members
		a.s.log.Info("added control-plane member", "name", req.GetName(), "peer", req.GetPeerUrl(), "id", fmt.Sprintf("%x", id))
	}
	// etcd knows the new member by its peer URL only until it starts: its
	// name is kept beside, for a retry of the same join and for 'members'.
	if _, err := cli.Put(ctx, joiningKey(id), req.GetName()); err != nil {
		return nil, errdefs.Unavailablef("record member %q as joining: %v", req.GetName(), err)
	}
	var parts []string
	for _, m := range list.Members {
		name := m.Name
		if m.ID == id {
			name = req.GetName()
		}
		for _, p := range m.PeerURLs {
			parts = append(parts, name+"="+p)
		}
	}
	sort.Strings(parts)
	resp := &v1.AddMemberResponse{Id: id, InitialCluster: strings.Join(parts, ",")}
	// The CA goes to a member joining (with a server token, or as a
	// member), not to an admin merely adding one.
	if caller, err := callerOf(ctx); err != nil || caller.Role == auth.RoleMember {
		key, err := a.s.sec.ca.KeyPEM()
		if err != nil {
			return nil, err
		}
		resp.CaCertificate, resp.CaKey = a.s.sec.ca.CertPEM, key
		resp.SecretsKey = a.s.cfg.Secrets.MemberKey() // configs: secrets sealed by any member open on every member
	}
	return resp, nil
}

// PromoteMember makes a learner a voting member; etcd refuses until the
// learner has caught up with the leader, and the caller retries.
func (a *controlAPI) PromoteMember(ctx context.Context, req *v1.PromoteMemberRequest) (*v1.PromoteMemberResponse, error) {
	cli := a.s.store.Client
	list, err := cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list etcd members: %w", err)
	}
	for _, m := range list.Members {
		if m.Name != req.GetName() {
			continue
		}
		if !m.IsLearner {
			return &v1.PromoteMemberResponse{}, nil
		}
		if _, err := cli.MemberPromote(ctx, m.ID); err != nil {
			return nil, errdefs.Unavailablef("etcd cannot promote member %q yet: %v", m.Name, err)
		}
		a.s.log.Info("promoted control-plane member to voting member", "name", m.Name)
		return &v1.PromoteMemberResponse{}, nil
	}
	return nil, errdefs.NotFoundf("no control-plane member named %q", req.GetName())
}

// RemoveMember removes a member from the etcd cluster, by name or, for
// one added that never started (it has no name yet), by its ID in hex as
// 'wasmorch members' shows it. A removed member's process stops: its etcd
// refuses to serve once it learns of the removal.
func (a *controlAPI) RemoveMember(ctx context.Context, req *v1.RemoveMemberRequest) (*v1.RemoveMemberResponse, error) {
	cli := a.s.store.Client
	list, err := cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list etcd members: %w", err)
	}
	if req.GetName() == "" {
		return nil, errdefs.Invalidf("no member named: give a member's name, or the ID 'wasmorch members' shows for one that has not started")
	}
	byID, idErr := strconv.ParseUint(req.GetName(), 16, 64)
	named := false
	for _, m := range list.Members {
		named = named || m.Name == req.GetName()
	}
	var names []string
	for _, m := range list.Members {
		if m.Name != req.GetName() && (named || idErr != nil || m.ID != byID) {
			names = append(names, cmpOr(m.Name, fmt.Sprintf("%x", m.ID)))
			continue
		}
		if len(list.Members) == 1 {
			return nil, errdefs.Preconditionf("member %q is the only member; a cluster cannot remove its last member", m.Name)
		}
		_, err := cli.MemberRemove(ctx, m.ID)
		if errors.Is(err, rpctypes.ErrUnhealthy) {
			return nil, errdefs.Unavailablef("etcd cannot remove member %q yet: %v (the members left must have been connected for 5 s); try again in a few seconds", m.Name, err)
		}
		if err != nil {
			return nil, errdefs.Preconditionf("etcd refused to remove member %q: %v", m.Name, err)
		}
		if m.Name != "" {
			_, _ = cli.Delete(ctx, store.MembersPrefix+m.Name)
		}
		_, _ = cli.Delete(ctx, joiningKey(m.ID))
		a.s.log.Info("removed control-plane member", "name", m.Name, "id", fmt.Sprintf("%x", m.ID))
		return &v1.RemoveMemberResponse{}, nil
	}
	return nil, errdefs.NotFoundf("no control-plane member named %q; the members are %s", req.GetName(), strings.Join(names, ", "))
}

func joiningKey(id uint64) string { return store.JoiningPrefix + fmt.Sprintf("%x", id) }

func joiningAs(name string) string {
	if name == "" {
		return ""
	}
	return ", joining as " + name
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// joining is the names members that have not started yet joined under,
// by ID; records of members that started or went are deleted. It reads
// locally (serializable), so that it answers without quorum.
func (s *Server) joining(ctx context.Context, members []*etcdserverpb.Member) map[uint64]string {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := s.store.Client.Get(rctx, store.JoiningPrefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return nil
	}
	unstarted := map[uint64]bool{}
	for _, m := range members {
		if m.Name == "" {
			unstarted[m.ID] = true
		}
	}
	out := map[uint64]string{}
	for _, kv := range resp.Kvs {
		id, err := strconv.ParseUint(string(kv.Key[len(store.JoiningPrefix):]), 16, 64)
		if err == nil && unstarted[id] {
			out[id] = string(kv.Value)
		} else if s.etcd.Server.Leader() != 0 {
			_, _ = s.store.Client.Delete(rctx, string(kv.Key))
		}
	}
	return out
}

// ListMembers reports the members as this member sees them. Membership
// comes from the local raft state, so that it answers even without quorum;
// health comes from the members' leased records.
func (a *controlAPI) ListMembers(ctx context.Context, _ *v1.ListMembersRequest) (*v1.ListMembersResponse, error) {
	es := a.s.etcd.Server
	leader := uint64(es.Leader())
	out := &v1.ListMembersResponse{}
	regs := map[string]*v1.Member{}
	controllerLeader := ""
	if leader != 0 {
		// Serializable: local reads, which cannot hang on a lost quorum.
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if resp, err := a.s.store.Client.Get(rctx, store.MembersPrefix, clientv3.WithPrefix(), clientv3.WithSerializable()); err == nil {
			for _, kv := range resp.Kvs {
				m := &v1.Member{}
				if proto.Unmarshal(kv.Value, m) == nil {
					regs[m.GetName()] = m
				}
			}
		}
		if resp, err := a.s.store.Client.Get(rctx, store.ElectionPrefix+"/", append(clientv3.WithFirstCreate(), clientv3.WithSerializable())...); err == nil && len(resp.Kvs) > 0 {
			controllerLeader = string(resp.Kvs[0].Value)
		}
	}
	var etcdMembers []*etcdserverpb.Member
	for _, m := range es.Cluster().Members() {
		etcdMembers = append(etcdMembers, &etcdserverpb.Member{ID: uint64(m.ID), Name: m.Name})
	}
	joining := a.s.joining(ctx, etcdMembers)
	for _, m := range es.Cluster().Members() {
		mv := &v1.Member{
			Name:             m.Name,
			Id:               uint64(m.ID),
			PeerUrls:         m.PeerURLs,
			EtcdLeader:       uint64(m.ID) == leader,
			ControllerLeader: m.Name != "" && m.Name == controllerLeader,
			Learner:          m.IsLearner,
		}
		reg, ok := regs[m.Name]
		switch {
		case leader == 0:
			mv.Error = "no etcd leader: fewer than a majority of the members are reachable from " + a.s.cfg.Name
		case m.Name == "":
			mv.Error = fmt.Sprintf("added%s, not started yet: start it, or remove it with 'wasmorch member remove %x'", joiningAs(joining[uint64(m.ID)]), uint64(m.ID))
		case !ok:
			mv.Error = "not heard from: its lease has expired"
		default:
			mv.Healthy = true
			mv.ApiAddress, mv.HttpAddress = reg.GetApiAddress(), reg.GetHttpAddress()
		}
		out.Members = append(out.Members, mv)
	}
	sort.Slice(out.Members, func(i, j int) bool { return out.Members[i].GetName() < out.Members[j].GetName() })
	return out, nil
}

// Snapshot streams a consistent etcd snapshot (etcd's own format, with its
// integrity hash), which `wasmorch snapshot restore` turns into a data dir.
func (a *controlAPI) Snapshot(_ *v1.SnapshotRequest, stream v1.Control_SnapshotServer) error {
	rc, err := a.s.store.Client.Snapshot(stream.Context())
	if err != nil {
		return fmt.Errorf("etcd snapshot: %w", err)
	}
	defer rc.Close()
	buf := make([]byte, 1<<20)
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 {
			if serr := stream.Send(&v1.SnapshotChunk{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return nil
		case err != nil:
			return fmt.Errorf("etcd snapshot: %w", err)
		}
	}
}

// quorumFree are the calls answered without etcd quorum.
var quorumFree = map[string]bool{
	v1.Control_Version_FullMethodName:     true,
	v1.Control_ListMembers_FullMethodName: true,
	healthpb.Health_Check_FullMethodName:  true, // NOT_SERVING then (health.go)
}

// quorumGuard refuses calls at once, and clearly, while this member's etcd
// has no leader, instead of letting them wait for etcd's own timeout; a
// call that fails while the leader is lost gets the same explanation.
func (s *Server) quorumGuard(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if quorumFree[info.FullMethod] {
		return h(ctx, req)
	}
	if s.etcd.Server.Leader() == 0 {
		return nil, s.noQuorum()
	}
	resp, err := h(ctx, req)
	if err != nil && s.etcd.Server.Leader() == 0 {
		return nil, s.noQuorum()
	}
	return resp, err
}

func (s *Server) noQuorum() error {
	n := len(s.etcd.Server.Cluster().Members())
	return status.Errorf(codes.Unavailable, "control-plane member %s has no etcd leader: fewer than %d of its %d members are reachable, so it refuses reads and writes until a majority is back; see 'wasmorch members'", s.cfg.Name, n/2+1, n)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
