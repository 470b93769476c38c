package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wasmorch/wasmorch/controlplane/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"go.etcd.io/etcd/server/v3/embed"
)

// Member is a running member's part in the membership: it advertises
// where it serves (Advertise), keeps its peer URL right (UpdatePeerURL),
// exports raft's view (WatchRaft), and ends a dead controller leader's
// leadership early (ExpediteFailover).
type Member struct {
	Name        string
	PeerAddr    string // the etcd peer listener as configured ("host:0": a free port)
	APIAddr     string // bound addresses, advertised to clients
	HTTPAddr    string
	ElectionTTL time.Duration
	Etcd        *embed.Etcd
	Client      *clientv3.Client
	Events      *events.Recorder
	Logger      *slog.Logger
	Registry    prometheus.Registerer
}

// Control-plane membership. The members are etcd's: adding and removing
// one is etcd's MemberAdd and MemberRemove, and quorum, leader election
// and replication are raft's. What wasmorch adds is a record per member
// under /wasmorch/members/<name>, bound to a lease the member keeps alive,
// which says where its API and gateway listen and whether it is up.

// joinTimeout bounds one AddMember call to a running member; joinPatience
// how long a starting member keeps asking while the cluster cannot add it
// yet (etcd wants every member connected for 5 s before it adds another).
const (
	joinTimeout  = 10 * time.Second
	joinPatience = 60 * time.Second
)

// JoinConfig is how a new member joins a running cluster.
type JoinConfig struct {
	// Name and PeerAddr are the new member's name and etcd peer listener.
	Name     string
	PeerAddr string
	// Servers are API addresses of running members; Token a server join
	// token of theirs.
	Servers []string
	Token   string
	Logger  *slog.Logger
}

// Joined is what a running member hands a joining one: the initial
// cluster it must start its etcd with, and the cluster's CA and secrets
// key, which the joiner keeps in its data dir (every member holds them).
type Joined struct {
	InitialCluster string
	CACert, CAKey  []byte
	SecretsKey     []byte
}

// Join asks a running member (the first of cfg.Servers that answers) to
// add this member to the etcd cluster, retrying while the cluster cannot
// add it yet.
func Join(ctx context.Context, cfg JoinConfig) (Joined, error) {
	req := &v1.AddMemberRequest{Name: cfg.Name, PeerUrl: PeerURL(cfg.PeerAddr)}
	deadline := time.Now().Add(joinPatience)
	for attempt := 0; ; attempt++ {
		joined, retry, err := joinOnce(ctx, cfg, req)
		if err == nil || !retry || time.Now().After(deadline) {
			return joined, err
		}
		if cfg.Logger != nil {
			cfg.Logger.Info("cannot join the cluster yet; retrying", "err", err)
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return Joined{}, ctx.Err()
		}
	}
}

// joinOnce asks each of cfg.Servers in turn; retry says whether a later
// attempt may succeed.
//
// The join is authenticated both ways by the server join token: the member
// asked checks the token, and this one checks that member's certificate
// against the CA fingerprint in the token. The answer carries the cluster
// CA, key included, which this member keeps in its pki directory: every
// member issues certificates.
func joinOnce(ctx context.Context, cfg JoinConfig, req *v1.AddMemberRequest) (joined Joined, retry bool, _ error) {
	tok, err := auth.ParseToken(cfg.Token)
	if err != nil {
		return Joined{}, false, err
	}
	var errs []error
	for _, addr := range cfg.Servers {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(auth.PinnedClientTLS(tok.CAPin))))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cfg.Token), joinTimeout)
		resp, err := v1.NewControlClient(conn).AddMember(cctx, req)
		cancel()
		_ = conn.Close()
		if err == nil {
			return Joined{InitialCluster: resp.GetInitialCluster(), CACert: resp.GetCaCertificate(), CAKey: resp.GetCaKey(), SecretsKey: resp.GetSecretsKey()}, false, nil
		}
		switch status.Code(err) {
		case codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists, codes.Unauthenticated, codes.PermissionDenied:
			// The cluster answered and refused: asking another member
			// would get the same answer.
			return Joined{}, false, fmt.Errorf("joining through %s: %s", addr, status.Convert(err).Message())
		}
		errs = append(errs, fmt.Errorf("%s: %s", addr, status.Convert(err).Message()))
	}
	return Joined{}, true, fmt.Errorf("could not join the cluster through any of %s: %w", strings.Join(cfg.Servers, ", "), errors.Join(errs...))
}

// Promote asks the members this one joined through to make it a voting
// member, until they do (it has caught up) or a minute runs out. It calls
// them as a member, with its certificate kp of the cluster's CA.
func Promote(ctx context.Context, cfg JoinConfig, ca *auth.CA, kp *auth.Keypair) error {
	deadline := time.Now().Add(joinPatience)
	var last error
	for time.Now().Before(deadline) {
		for _, addr := range cfg.Servers {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(auth.MemberClientTLS(ca.Pool(), kp))))
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

// Advertise keeps this member's record, bound to a lease, until ctx ends.
func (mb *Member) Advertise(ctx context.Context) error {
	rec, err := proto.Marshal(&v1.Member{Name: mb.Name, ApiAddress: mb.APIAddr, HttpAddress: mb.HTTPAddr})
	if err != nil {
		return err
	}
	ttl := int64(mb.ElectionTTL.Round(time.Second) / time.Second)
	for ctx.Err() == nil {
		err := func() error {
			lease, err := mb.Client.Grant(ctx, ttl)
			if err != nil {
				return err
			}
			if _, err := mb.Client.Put(ctx, store.MembersPrefix+mb.Name, string(rec), clientv3.WithLease(lease.ID)); err != nil {
				return err
			}
			ka, err := mb.Client.KeepAlive(ctx, lease.ID)
			if err != nil {
				return err
			}
			for range ka {
			}
			return errors.New("member lease lost")
		}()
		if ctx.Err() == nil {
			mb.Logger.Debug("member record lapsed; advertising again", "err", err)
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

// ExpediteFailover shortens the time a dead controller leader keeps the
// controllers: its election key stays until its lease expires, which is
// the election TTL plus the extension etcd grants every lease when the raft
// leader changes (together ~3 s by default). A member that finds the
// leader's API address refusing connections twice in a row (nothing
// listens there: the process is gone) revokes that lease at once, and the
// election, still etcd's, moves on. Where the address cannot be judged (an
// unspecified host, a timeout as in a partition) the lease is left to
// expire.
func (mb *Member) ExpediteFailover(ctx context.Context) error {
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
		lease, name, addr := mb.controllerLeaderAddr(ctx)
		if lease == 0 || name == mb.Name || addr == "" {
			refused = 0
			continue
		}
		// Revoking needs a raft leader other than the dead member (which
		// may have been both): until then the request would only wait.
		if lead := mb.Etcd.Server.Leader(); lead == 0 || mb.memberName(uint64(lead)) == name {
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
		_, err = mb.Client.Revoke(rctx, lease)
		cancel()
		if err != nil {
			mb.Logger.Debug("could not revoke a dead leader's lease yet", "leader", name, "err", err)
			continue
		}
		mb.Logger.Info("controller leader is gone (its API refuses connections); ended its leadership", "leader", name, "api", addr)
		_ = mb.Events.Record(ctx, "member/"+name, "LeaderGone", "member %s found nothing listening at %s; revoked its leadership", mb.Name, addr)
		refused = 0
	}
}

// UpdatePeerURL makes the cluster's record of this member's peer URL the
// one it listens on, as 'etcdctl member update' would: a member restarted
// with another --peer (or, alone, with a free port), or one whose data dir
// predates TLS between members (http://), is reachable again. It retries
// until the cluster has quorum or ctx ends.
func (mb *Member) UpdatePeerURL(ctx context.Context) error {
	want := PeerURL(mb.PeerAddr)
	if _, port, err := net.SplitHostPort(mb.PeerAddr); err == nil && port == "0" {
		want = PeerURL(mb.Etcd.Peers[0].Addr().String())
	}
	es := mb.Etcd.Server
	for ctx.Err() == nil {
		m := es.Cluster().Member(es.MemberID())
		if m == nil || len(m.PeerURLs) == 1 && m.PeerURLs[0] == want {
			return nil
		}
		uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := mb.Client.MemberUpdate(uctx, uint64(es.MemberID()), []string{want})
		cancel()
		if err == nil {
			log := mb.Logger.Info
			if u, err := url.Parse(strings.Join(m.PeerURLs, ",")); err == nil && u.Port() == "0" {
				log = mb.Logger.Debug // a member alone, on a free port: every start
			}
			log("updated this member's etcd peer URL", "from", strings.Join(m.PeerURLs, ","), "to", want)
			return nil
		}
		mb.Logger.Debug("cannot update this member's etcd peer URL yet", "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
	return nil
}

// memberName is the name of the etcd member with this ID, "" if unknown.
func (mb *Member) memberName(id uint64) string {
	for _, m := range mb.Etcd.Server.Cluster().Members() {
		if uint64(m.ID) == id {
			return m.Name
		}
	}
	return ""
}

// controllerLeaderAddr reads, locally, who holds the controller election
// and where its API listens.
func (mb *Member) controllerLeaderAddr(ctx context.Context) (clientv3.LeaseID, string, string) {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := mb.Client.Get(rctx, store.ElectionPrefix+"/", append(clientv3.WithFirstCreate(), clientv3.WithSerializable())...)
	if err != nil || len(resp.Kvs) == 0 {
		return 0, "", ""
	}
	kv := resp.Kvs[0]
	name := string(kv.Value)
	rec, err := mb.Client.Get(rctx, store.MembersPrefix+name, clientv3.WithSerializable())
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

// WatchRaft exports, every 100 ms, whether etcd has a leader, whether it
// is this member, and how many members there are, and logs leader changes.
func (mb *Member) WatchRaft(ctx context.Context) error {
	m := &memberMetrics{
		hasLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wasmorch_etcd_has_leader", Help: "1 while this member's etcd knows a raft leader (the cluster has quorum)."}),
		isLeader:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "wasmorch_etcd_is_leader", Help: "1 while this member is the etcd raft leader."}),
		members:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "wasmorch_etcd_members", Help: "Members of the etcd cluster as this member knows them."}),
	}
	for _, c := range []prometheus.Collector{m.hasLeader, m.isLeader, m.members} {
		if err := mb.Registry.Register(c); err != nil {
			return err
		}
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var last uint64
	for {
		es := mb.Etcd.Server
		lead := es.Leader()
		if uint64(lead) != last {
			if lead == 0 {
				mb.Logger.Warn("etcd has no leader: an election is under way, or fewer than a majority of the members are reachable")
			} else {
				mb.Logger.Info("etcd leader", "member", mb.memberName(uint64(lead)))
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
