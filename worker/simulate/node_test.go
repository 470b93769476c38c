package simulate

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Bounds of the waits below: there so that a broken node fails the test
// instead of hanging it; nothing is asserted about how fast anything is.
const (
	pollInterval = 5 * time.Millisecond
	maxPolls     = 2000
)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range maxPolls {
		if cond() {
			return
		}
		time.Sleep(pollInterval)
	}
	t.Fatalf("%s: never happened", what)
}

// fakeAgent is the control plane's Agent service as a hollow node sees
// it: it records registrations, heartbeats and reports, and streams the
// sets a test sends on sets. Calls it does not implement panic.
type fakeAgent struct {
	pb.AgentClient
	sets chan *pb.Assignments // closed: the control plane ends the session

	mu            sync.Mutex
	registered    []*pb.Node
	sessions      []*pb.SessionRequest
	heartbeats    int
	reports       [][]*pb.InstanceStatus
	failReports   int   // fail this many reports first
	registerErr   error // returned by Register
	heartbeatFail bool
}

func newFakeAgent() *fakeAgent { return &fakeAgent{sets: make(chan *pb.Assignments)} }

func (f *fakeAgent) Register(_ context.Context, req *pb.RegisterRequest, _ ...grpc.CallOption) (*pb.RegisterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.registerErr != nil {
		return nil, f.registerErr
	}
	f.registered = append(f.registered, req.GetNode())
	return &pb.RegisterResponse{HeartbeatIntervalMs: 5}, nil
}

func (f *fakeAgent) Heartbeat(context.Context, *pb.HeartbeatRequest, ...grpc.CallOption) (*pb.HeartbeatResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats++
	if f.heartbeatFail {
		return nil, status.Error(codes.NotFound, "node not found")
	}
	return &pb.HeartbeatResponse{}, nil
}

func (f *fakeAgent) ReportStatus(_ context.Context, b *pb.StatusBatch, _ ...grpc.CallOption) (*pb.StatusAck, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failReports > 0 {
		f.failReports--
		return nil, status.Error(codes.Unavailable, "etcd is busy")
	}
	f.reports = append(f.reports, b.GetStatuses())
	return &pb.StatusAck{}, nil
}

func (f *fakeAgent) Session(ctx context.Context, req *pb.SessionRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[pb.Assignments], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions = append(f.sessions, req)
	return &fakeStream{ctx: ctx, sets: f.sets}, nil
}

// reported returns the reports so far, and the latest state reported per
// instance.
func (f *fakeAgent) reported() ([][]*pb.InstanceStatus, map[string]pb.InstanceState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	latest := map[string]pb.InstanceState{}
	for _, r := range f.reports {
		for _, st := range r {
			latest[st.GetId()] = st.GetState()
		}
	}
	return append([][]*pb.InstanceStatus(nil), f.reports...), latest
}

func (f *fakeAgent) counts() (registrations, heartbeats int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.registered), f.heartbeats
}

type fakeStream struct {
	grpc.ClientStream
	ctx  context.Context
	sets chan *pb.Assignments
}

func (s *fakeStream) Recv() (*pb.Assignments, error) {
	select {
	case <-s.ctx.Done():
		return nil, status.FromContextError(s.ctx.Err()).Err()
	case a, ok := <-s.sets:
		if !ok {
			return nil, io.EOF
		}
		return a, nil
	}
}

// testNode is hollow node index of a simulator whose control plane is
// agent, with a certificate from a CA of its own.
func testNode(t *testing.T, agent pb.AgentClient, index int) (*Simulator, *hollowNode) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Servers = []string{"127.0.0.1:1"}
	cfg.Nodes = index + 1
	cfg.DataDir = t.TempDir()
	cfg.Zones = 3
	cfg.Labels = map[string]string{"pool": "sim"}
	cfg.reconnectBase, cfg.reconnectMax, cfg.reportRetry = time.Millisecond, 5*time.Millisecond, time.Millisecond
	sim, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := sim.nodes[index]
	n.client = agent
	n.id = issueIdentity(t, n.name)
	return sim, n
}

func issueIdentity(t *testing.T, name string) *identity {
	t.Helper()
	ca, _, err := auth.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(auth.Identity{Role: auth.RoleNode, Name: name}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id, err := parseIdentity(auth.NodeCredential{CAPEM: ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestHollowNodeSession runs one session against a fake control plane:
// the node registers with its labels and capacity, heartbeats, reports
// each assigned instance Starting then Running in batched calls, reports
// those that leave its set Stopped, and ends the session when the control
// plane closes it.
func TestHollowNodeSession(t *testing.T) {
	agent := newFakeAgent()
	sim, n := testNode(t, agent, 4)
	type result struct {
		established bool
		err         error
	}
	done := make(chan result, 1)
	go func() {
		ok, err := n.session(context.Background())
		done <- result{ok, err}
	}()

	agent.sets <- set("a", "b", "c")
	eventually(t, "a, b and c reported Running", func() bool {
		_, latest := agent.reported()
		return latest["a"] == running && latest["b"] == running && latest["c"] == running
	})
	reports, _ := agent.reported()
	if len(reports) != 2 || len(reports[0]) != 3 || len(reports[1]) != 3 {
		t.Errorf("reports = %v, want one call with the three Starting, one with the three Running", reports)
	}
	for _, st := range reports[0] {
		if st.GetState() != starting || st.GetNode() != n.name {
			t.Errorf("first report has %v, want every instance Starting on %s", st, n.name)
		}
	}
	if st := sim.Stats(); st.Registered != 1 || st.Instances != 3 || st.Reports != 2 || st.Statuses != 6 {
		t.Errorf("stats during the session = %+v, want 1 registered, 3 instances, 6 statuses in 2 reports", st)
	}

	agent.sets <- set("b")
	eventually(t, "a and c reported Stopped", func() bool {
		_, latest := agent.reported()
		return latest["a"] == stopped && latest["c"] == stopped && latest["b"] == running
	})
	eventually(t, "a few heartbeats", func() bool { _, hb := agent.counts(); return hb >= 3 })

	close(agent.sets)
	r := <-done
	if !r.established || !errdefs.IsUnavailable(r.err) {
		t.Errorf("session ended with (%v, %v), want (true, unavailable: the control plane closed the session)", r.established, r.err)
	}
	if st := sim.Stats(); st.Registered != 0 || st.Instances != 1 || st.Sessions != 1 {
		t.Errorf("stats after the session = %+v, want 0 registered, 1 instance held, 1 session", st)
	}

	node := agent.registered[0]
	want := map[string]string{"pool": "sim", "simulated": "true", "zone": "z1"} // node 4 of 3 zones
	if len(node.GetLabels()) != len(want) || node.GetName() != "sim-0004" || node.GetCapacity().GetInstances() != DefaultInstancesPerNode ||
		node.GetCapacity().GetMemoryBytes() != DefaultMemoryBytes || len(node.GetRuntimes()) != 1 || node.GetRuntimes()[0] != "wasm" {
		t.Errorf("registered %v, want sim-0004 with labels %v, wasm, the default capacity", node, want)
	}
	for k, v := range want {
		if node.GetLabels()[k] != v {
			t.Errorf("label %s = %q, want %q", k, node.GetLabels()[k], v)
		}
	}
}

// TestHollowNodeDeltas: a node asks for deltas; a control plane that
// serves them sends the full set first (full) and then what changed, and
// after a reconnection the node resumes from the revision it applied. A
// control plane that does not serve deltas sends full sets, never flagged
// full, and the node takes each as its whole set.
func TestHollowNodeDeltas(t *testing.T) {
	agent := newFakeAgent()
	_, n := testNode(t, agent, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.runSessions(ctx) }()

	agent.sets <- &pb.Assignments{Full: true, Revision: 10, Instances: set("a", "b").GetInstances()}
	agent.sets <- &pb.Assignments{Revision: 11, Instances: set("c").GetInstances(), Removed: []string{"a"}}
	eventually(t, "a Stopped, b and c Running", func() bool {
		_, latest := agent.reported()
		return latest["a"] == stopped && latest["b"] == running && latest["c"] == running
	})
	// The control plane ends the session; the node comes back and resumes.
	agent.mu.Lock()
	ended := agent.sets
	agent.sets = make(chan *pb.Assignments)
	agent.mu.Unlock()
	close(ended)
	eventually(t, "a second session", func() bool {
		agent.mu.Lock()
		defer agent.mu.Unlock()
		return len(agent.sessions) == 2
	})
	agent.mu.Lock()
	first, second := agent.sessions[0], agent.sessions[1]
	agent.mu.Unlock()
	if !first.GetDeltas() || first.GetResumeRevision() != 0 || !second.GetDeltas() || second.GetResumeRevision() != 11 {
		t.Errorf("session requests = %v, %v; want deltas, then deltas resuming from 11", first, second)
	}
	cancel()
	<-done

	// A control plane without deltas: every message is the whole set.
	old := newFakeAgent()
	_, n = testNode(t, old, 0)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = n.session(ctx) }()
	old.sets <- &pb.Assignments{Revision: 10, Instances: set("a", "b").GetInstances()}
	old.sets <- &pb.Assignments{Revision: 11, Instances: set("b").GetInstances()}
	eventually(t, "a Stopped once it left the full set", func() bool {
		_, latest := old.reported()
		return latest["a"] == stopped && latest["b"] == running
	})
}

// TestHollowNodeRetriesFailedReports: a report the control plane does not
// take is sent again, with whatever changed meanwhile.
func TestHollowNodeRetriesFailedReports(t *testing.T) {
	agent := newFakeAgent()
	agent.failReports = 2
	_, n := testNode(t, agent, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = n.session(ctx) }()
	agent.sets <- set("a")
	eventually(t, "a reported Running after two failed reports", func() bool {
		_, latest := agent.reported()
		return latest["a"] == running
	})
}

// TestHollowNodeReregisters: when a session ends, by a failed heartbeat
// or the control plane closing it, the node registers again and resumes;
// the control plane is told every instance's status again.
func TestHollowNodeReregisters(t *testing.T) {
	agent := newFakeAgent()
	agent.heartbeatFail = true
	sim, n := testNode(t, agent, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.run(ctx) }()
	eventually(t, "registered again after failed heartbeats", func() bool { r, _ := agent.counts(); return r >= 3 })

	agent.mu.Lock()
	agent.heartbeatFail = false
	agent.mu.Unlock()
	agent.sets <- set("a")
	eventually(t, "a reported Running", func() bool { _, latest := agent.reported(); return latest["a"] == running })
	before, _ := agent.reported()
	close(agent.sets) // the control plane ends the session; the node comes back
	eventually(t, "a reported again after the node registered again", func() bool {
		reports, _ := agent.reported()
		return len(reports) > len(before)
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run ended with %v after its context was cancelled, want nil", err)
	}
	if st := sim.Stats(); st.Joined != 1 || st.Registered != 0 {
		t.Errorf("stats after run = %+v, want 1 joined, 0 registered", st)
	}
}

// TestHollowNodeInvalidRegistrationStops: a registration the control
// plane refuses as invalid (a bad label) ends the node with the reason,
// rather than retrying forever.
func TestHollowNodeInvalidRegistrationStops(t *testing.T) {
	agent := newFakeAgent()
	agent.registerErr = status.Error(codes.InvalidArgument, `label value "a b" of "pool" is not valid`)
	_, n := testNode(t, agent, 0)
	err := n.run(context.Background())
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("run = %v, want the invalid-argument refusal", err)
	}
}

// TestRunNeedsATokenWithoutCertificates: nodes without certificates and
// no join token fail at once, saying what to pass.
func TestRunNeedsATokenWithoutCertificates(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Servers = []string{"127.0.0.1:1"}
	cfg.Nodes = 2
	cfg.DataDir = t.TempDir()
	sim, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = sim.Run(context.Background())
	if !errdefs.IsFailedPrecondition(err) || !containsAll(err.Error(), "sim-0000", "no join token", "--token") {
		t.Errorf("Run = %v, want a failed precondition naming sim-0000 and --token", err)
	}
}

// TestLoadIdentity: a node reuses the certificate kept in its directory
// unless it is another node's, expired, or of another cluster than the
// token.
func TestLoadIdentity(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := auth.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	save := func(name string, at time.Time) {
		certPEM, keyPEM, err := ca.Issue(auth.Identity{Role: auth.RoleNode, Name: name}, nil, at)
		if err != nil {
			t.Fatal(err)
		}
		if err := auth.SaveNodeCredential(dir, auth.NodeCredential{CAPEM: ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	if id, why, err := loadIdentity(dir, "n1", nil, now); id != nil || err != nil || !containsAll(why, "no node certificate") {
		t.Errorf("empty dir: (%v, %q, %v), want no identity: no node certificate", id, why, err)
	}
	save("n1", now)
	if id, _, err := loadIdentity(dir, "n1", nil, now); id == nil || err != nil {
		t.Errorf("n1's certificate: (%v, %v), want it reused", id, err)
	}
	own, err := ca.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if id, _, _ := loadIdentity(dir, "n1", &own, now); id == nil {
		t.Error("with a token of the same cluster the certificate is not reused")
	}
	other := own
	other.CAPin = "another-cluster"
	if id, why, _ := loadIdentity(dir, "n1", &other, now); id != nil || !containsAll(why, "another cluster") {
		t.Errorf("a token of another cluster: (%v, %q), want the node to join again", id, why)
	}
	if id, why, _ := loadIdentity(dir, "n2", nil, now); id != nil || !containsAll(why, "not node n2's") {
		t.Errorf("n1's certificate for n2: (%v, %q), want refused", id, why)
	}
	if id, why, _ := loadIdentity(dir, "n1", nil, now.Add(10*365*24*time.Hour)); id != nil || !containsAll(why, "expired") {
		t.Errorf("an expired certificate: (%v, %q), want refused", id, why)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
