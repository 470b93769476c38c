package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/api"
	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/store"
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
			if err := api.SaveReceivedSecretsKey(cfg.DataDir, resp.GetSecretsKey()); err != nil {
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
