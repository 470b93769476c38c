package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Control-plane membership. The members are etcd's: adding and removing
// one is etcd's MemberAdd and MemberRemove, and quorum, leader election
// and replication are raft's. What wasmorch adds is a record per member
// under /wasmorch/members/<name>, bound to a lease the member keeps alive,
// which says where its API and gateway listen and whether it is up.

const membersPrefix = store.MembersPrefix

// joinTimeout bounds one AddMember call to a running member; joinPatience
// how long a starting member keeps asking while the cluster cannot add it
// yet (etcd wants every member connected for 5 s before it adds another).
const (
	joinTimeout  = 10 * time.Second
	joinPatience = 60 * time.Second
)

// joinCluster asks a running member (the first of cfg.Join that answers)
// to add this member to the etcd cluster, and returns the initial cluster
// this member must start with.
func joinCluster(ctx context.Context, cfg Config) (string, error) {
	req := &v1.AddMemberRequest{Name: cfg.Name, PeerUrl: peerURLOf(cfg.EtcdPeerAddr)}
	deadline := time.Now().Add(joinPatience)
	for attempt := 0; ; attempt++ {
		joined, retry, err := joinOnce(ctx, cfg, req)
		if err == nil || !retry || time.Now().After(deadline) {
			return joined, err
		}
		cfg.Logger.Info("cannot join the cluster yet; retrying", "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// joinOnce asks each of cfg.Join in turn; retry says whether a later
// attempt may succeed.
//
// The join is authenticated both ways by the server join token: the member
// asked checks the token, and this one checks that member's certificate
// against the CA fingerprint in the token. The answer carries the cluster
// CA, key included, which this member saves in its pki directory: every
// member issues certificates.
func joinOnce(ctx context.Context, cfg Config, req *v1.AddMemberRequest) (joined string, retry bool, _ error) {
	tok, err := auth.ParseToken(cfg.JoinToken)
	if err != nil {
		return "", false, err
	}
	var errs []error
	for _, addr := range cfg.Join {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(auth.PinnedClientTLS(tok.CAPin))))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cfg.JoinToken), joinTimeout)
		resp, err := v1.NewControlClient(conn).AddMember(cctx, req)
		cancel()
		_ = conn.Close()
		if err == nil {
			if err := auth.SaveCA(pkiDir(cfg.DataDir), resp.GetCaCertificate(), resp.GetCaKey()); err != nil {
				return "", false, fmt.Errorf("the cluster CA received from %s: %w", addr, err)
			}
			if err := saveReceivedSecretsKey(cfg.DataDir, resp.GetSecretsKey()); err != nil {
				return "", false, fmt.Errorf("the secrets key received from %s: %w", addr, err)
			}
			return resp.GetInitialCluster(), false, nil
		}
		switch status.Code(err) {
		case codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists, codes.Unauthenticated, codes.PermissionDenied:
			// The cluster answered and refused: asking another member
			// would get the same answer.
			return "", false, fmt.Errorf("joining through %s: %s", addr, status.Convert(err).Message())
		}
		errs = append(errs, fmt.Errorf("%s: %s", addr, status.Convert(err).Message()))
	}
	return "", true, fmt.Errorf("could not join the cluster through any of %s: %w", strings.Join(cfg.Join, ", "), errors.Join(errs...))
}

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
		case m.Name == "":
			return nil, errdefs.Preconditionf("member %x (peer %s) was added but has not started; start it or remove it before adding another", m.ID, strings.Join(m.PeerURLs, ","))
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
		resp.SecretsKey = a.s.keys.member[:] // configs: secrets sealed by any member open on every member
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

// promoteSelf asks the members this one joined through to make it a voting
// member, until they do (it has caught up) or joinPatience runs out.
func promoteSelf(ctx context.Context, cfg Config, sec *security) error {
	deadline := time.Now().Add(joinPatience)
	var last error
	for time.Now().Before(deadline) {
		for _, addr := range cfg.Join {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(auth.MemberClientTLS(sec.ca.Pool(), sec.member))))
			if err != nil {
				last = err
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, joinTimeout)
			_, err = v1.NewControlClient(conn).PromoteMember(cctx, &v1.PromoteMemberRequest{Name: cfg.Name})
			cancel()
			_ = conn.Close()
			if err == nil {
				return nil
			}
			last = fmt.Errorf("%s: %s", addr, status.Convert(err).Message())
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("joined as a learner but was not promoted to a voting member within %s: %w", joinPatience, last)
}

// RemoveMember removes a member from the etcd cluster. A removed member's
// process stops: its etcd refuses to serve once it learns of the removal.
func (a *controlAPI) RemoveMember(ctx context.Context, req *v1.RemoveMemberRequest) (*v1.RemoveMemberResponse, error) {
	cli := a.s.store.Client
	list, err := cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list etcd members: %w", err)
	}
	var names []string
	for _, m := range list.Members {
		if m.Name != req.GetName() {
			names = append(names, m.Name)
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
		_, _ = cli.Delete(ctx, membersPrefix+m.Name)
		a.s.log.Info("removed control-plane member", "name", m.Name)
		return &v1.RemoveMemberResponse{}, nil
	}
	return nil, errdefs.NotFoundf("no control-plane member named %q; the members are %s", req.GetName(), strings.Join(names, ", "))
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
		if resp, err := a.s.store.Client.Get(rctx, membersPrefix, clientv3.WithPrefix(), clientv3.WithSerializable()); err == nil {
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
			mv.Error = "added, not started yet"
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

// advertise keeps this member's record, bound to a lease, until ctx ends.
func (s *Server) advertise(ctx context.Context) error {
	rec, err := proto.Marshal(&v1.Member{Name: s.cfg.Name, ApiAddress: s.APIAddr(), HttpAddress: s.HTTPAddr()})
	if err != nil {
		return err
	}
	ttl := int64(s.cfg.ElectionTTL.Round(time.Second) / time.Second)
	for ctx.Err() == nil {
		err := func() error {
			lease, err := s.store.Client.Grant(ctx, ttl)
			if err != nil {
				return err
			}
			if _, err := s.store.Client.Put(ctx, membersPrefix+s.cfg.Name, string(rec), clientv3.WithLease(lease.ID)); err != nil {
				return err
			}
			ka, err := s.store.Client.KeepAlive(ctx, lease.ID)
			if err != nil {
				return err
			}
			for range ka {
			}
			return errors.New("member lease lost")
		}()
		if ctx.Err() == nil {
			s.log.Debug("member record lapsed; advertising again", "err", err)
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

// expediteFailover shortens the time a dead controller leader keeps the
// controllers: its election key stays until its lease expires, which is
// the election TTL plus the extension etcd grants every lease when the raft
// leader changes (together ~3 s by default). A member that finds the
// leader's API address refusing connections twice in a row (nothing
// listens there: the process is gone) revokes that lease at once, and the
// election, still etcd's, moves on. Where the address cannot be judged (an
// unspecified host, a timeout as in a partition) the lease is left to
// expire.
func (s *Server) expediteFailover(ctx context.Context) error {
	const every = 200 * time.Millisecond
	t := time.NewTicker(every)
	defer t.Stop()
	var suspect clientv3.LeaseID
	refused := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		lease, name, addr := s.controllerLeaderAddr(ctx)
		if lease == 0 || name == s.cfg.Name || addr == "" {
			refused = 0
			continue
		}
		// Revoking needs a raft leader other than the dead member (which
		// may have been both): until then the request would only wait.
		if lead := s.etcd.Server.Leader(); lead == 0 || s.memberName(uint64(lead)) == name {
			continue
		}
		conn, err := net.DialTimeout("tcp", addr, every)
		if err == nil {
			_ = conn.Close()
			refused = 0
			continue
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			refused = 0
			continue
		}
		if lease != suspect {
			suspect, refused = lease, 0
		}
		if refused++; refused < 2 {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = s.store.Client.Revoke(rctx, lease)
		cancel()
		if err != nil {
			s.log.Debug("could not revoke a dead leader's lease yet", "leader", name, "err", err)
			continue
		}
		s.log.Info("controller leader is gone (its API refuses connections); ended its leadership", "leader", name, "api", addr)
		_ = s.events.Record(ctx, "member/"+name, "LeaderGone", "member %s found nothing listening at %s; revoked its leadership", s.cfg.Name, addr)
		refused = 0
	}
}

// updatePeerURL makes the cluster's record of this member's peer URL the
// one it listens on, as 'etcdctl member update' would: a member restarted
// with another --peer (or, alone, with a free port), or one whose data dir
// predates TLS between members (http://), is reachable again. It retries
// until the cluster has quorum or ctx ends.
func (s *Server) updatePeerURL(ctx context.Context) error {
	want := peerURLOf(s.cfg.EtcdPeerAddr)
	if _, port, err := net.SplitHostPort(s.cfg.EtcdPeerAddr); err == nil && port == "0" {
		want = peerURLOf(s.etcd.Peers[0].Addr().String())
	}
	es := s.etcd.Server
	for ctx.Err() == nil {
		m := es.Cluster().Member(es.MemberID())
		if m == nil || len(m.PeerURLs) == 1 && m.PeerURLs[0] == want {
			return nil
		}
		uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.store.Client.MemberUpdate(uctx, uint64(es.MemberID()), []string{want})
		cancel()
		if err == nil {
			log := s.log.Info
			if u, err := url.Parse(strings.Join(m.PeerURLs, ",")); err == nil && u.Port() == "0" {
				log = s.log.Debug // a member alone, on a free port: every start
			}
			log("updated this member's etcd peer URL", "from", strings.Join(m.PeerURLs, ","), "to", want)
			return nil
		}
		s.log.Debug("cannot update this member's etcd peer URL yet", "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
	return nil
}

// memberName is the name of the etcd member with this ID, "" if unknown.
func (s *Server) memberName(id uint64) string {
	for _, m := range s.etcd.Server.Cluster().Members() {
		if uint64(m.ID) == id {
			return m.Name
		}
	}
	return ""
}

// controllerLeaderAddr reads, locally, who holds the controller election
// and where its API listens.
func (s *Server) controllerLeaderAddr(ctx context.Context) (clientv3.LeaseID, string, string) {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := s.store.Client.Get(rctx, store.ElectionPrefix+"/", append(clientv3.WithFirstCreate(), clientv3.WithSerializable())...)
	if err != nil || len(resp.Kvs) == 0 {
		return 0, "", ""
	}
	kv := resp.Kvs[0]
	name := string(kv.Value)
	rec, err := s.store.Client.Get(rctx, membersPrefix+name, clientv3.WithSerializable())
	if err != nil || len(rec.Kvs) == 0 {
		return clientv3.LeaseID(kv.Lease), name, ""
	}
	m := &v1.Member{}
	if proto.Unmarshal(rec.Kvs[0].Value, m) != nil {
		return clientv3.LeaseID(kv.Lease), name, ""
	}
	host, _, err := net.SplitHostPort(m.GetApiAddress())
	if err != nil || host == "" || net.ParseIP(host).IsUnspecified() {
		return clientv3.LeaseID(kv.Lease), name, ""
	}
	return clientv3.LeaseID(kv.Lease), name, m.GetApiAddress()
}

// memberMetrics exports raft leadership as seen by this member.
type memberMetrics struct {
	hasLeader prometheus.Gauge
	isLeader  prometheus.Gauge
	members   prometheus.Gauge
}

func (s *Server) watchRaft(ctx context.Context) error {
	m := &memberMetrics{
		hasLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wasmorch_etcd_has_leader", Help: "1 while this member's etcd knows a raft leader (the cluster has quorum)."}),
		isLeader:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "wasmorch_etcd_is_leader", Help: "1 while this member is the etcd raft leader."}),
		members:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "wasmorch_etcd_members", Help: "Members of the etcd cluster as this member knows them."}),
	}
	for _, c := range []prometheus.Collector{m.hasLeader, m.isLeader, m.members} {
		if err := s.metrics.registry.Register(c); err != nil {
			return err
		}
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var last uint64
	for {
		es := s.etcd.Server
		lead := es.Leader()
		if uint64(lead) != last {
			if lead == 0 {
				s.log.Warn("etcd has no leader: an election is under way, or fewer than a majority of the members are reachable")
			} else {
				s.log.Info("etcd leader", "member", s.memberName(uint64(lead)))
			}
			last = uint64(lead)
		}
		m.hasLeader.Set(boolGauge(lead != 0))
		m.isLeader.Set(boolGauge(lead != 0 && lead == es.MemberID()))
		m.members.Set(float64(len(es.Cluster().Members())))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// quorumFree are the calls answered without etcd quorum.
var quorumFree = map[string]bool{
	v1.Control_Version_FullMethodName:     true,
	v1.Control_ListMembers_FullMethodName: true,
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
