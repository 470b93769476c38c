// Package certrecords keeps the records of the certificates the cluster's
// CA issued and the revocation list in etcd, and a member's copy of that
// list, which ends the streams of a certificate when it is revoked.
package certrecords

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Certificates the CA issues to nodes and admins are recorded while they
// are valid (/wasmorch/certs/<role>/<name>/<serial>), so that removing a
// node can revoke every certificate it holds; a revoked one goes on the
// revocation list (/wasmorch/revoked/<serial>). Both kinds of record are
// bound to a lease that ends when the certificate expires (a minute
// later, for clocks that differ): past that the certificate is refused as
// expired, so the list holds only what is revoked and still unexpired —
// with a day's node certificates, a day of removals. etcd restarts a
// lease's countdown when its leader changes, so a record may outlive its
// certificate, never the reverse.
//
// Every member keeps the list in memory, fed by a watch (Revocations),
// and checks the caller's certificate against it on every call, and
// ends the streams (node sessions, watches, logs) of a certificate when
// it is revoked.

// leaseSlack is how long a record outlives its certificate.
const leaseSlack = time.Minute

// Key is the record of the certificate serial issued to name in role.
func Key(role auth.Role, name, serial string) string {
	return store.CertsPrefix + string(role) + "/" + name + "/" + serial
}

// Prefix is where the records of every certificate of name in role are.
func Prefix(role auth.Role, name string) string {
	return store.CertsPrefix + string(role) + "/" + name + "/"
}

// New describes a certificate the CA just issued (PEM).
func New(certPEM []byte, id auth.Identity, tokenID string) (*v1.CertificateRecord, error) {
	cert, err := auth.ParseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	return &v1.CertificateRecord{Serial: auth.Serial(cert), Role: string(id.Role), Name: id.Name,
		IssuedUnixNano: time.Now().UnixNano(), ExpiresUnixNano: cert.NotAfter.UnixNano(), TokenId: tokenID}, nil
}

// leaseUntil grants a lease that ends leaseSlack after expires.
func leaseUntil(ctx context.Context, cli *clientv3.Client, expires int64) (clientv3.LeaseID, error) {
	ttl := int64(time.Until(time.Unix(0, expires).Add(leaseSlack)) / time.Second)
	resp, err := cli.Grant(ctx, max(ttl, 1))
	if err != nil {
		return 0, errdefs.Unavailablef("grant a lease for a certificate record: %v", err)
	}
	return resp.ID, nil
}

// PutOp is the write that records an issued certificate, bound to a
// lease of its own.
func PutOp(ctx context.Context, cli *clientv3.Client, rec *v1.CertificateRecord) (clientv3.Op, clientv3.LeaseID, error) {
	lease, err := leaseUntil(ctx, cli, rec.GetExpiresUnixNano())
	if err != nil {
		return clientv3.Op{}, 0, err
	}
	b, err := proto.Marshal(rec)
	if err != nil {
		return clientv3.Op{}, 0, err
	}
	return clientv3.OpPut(Key(auth.Role(rec.GetRole()), rec.GetName(), rec.GetSerial()), string(b), clientv3.WithLease(lease)), lease, nil
}

// Record records a certificate the CA issued outside the API
// (a member's admin credential, the node certificate of `up`'s worker),
// unless it is recorded already.
func Record(ctx context.Context, cli *clientv3.Client, certPEM []byte, id auth.Identity) error {
	rec, err := New(certPEM, id, "")
	if err != nil {
		return err
	}
	key := Key(id.Role, id.Name, rec.GetSerial())
	if resp, err := cli.Get(ctx, key, clientv3.WithCountOnly()); err == nil && resp.Count > 0 {
		return nil
	}
	op, lease, err := PutOp(ctx, cli, rec)
	if err != nil {
		return err
	}
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(op).Commit()
	if err != nil {
		return errdefs.Unavailablef("record the certificate of %s: %v", id, err)
	}
	if !resp.Succeeded {
		_, _ = cli.Revoke(ctx, lease) // recorded meanwhile: the lease holds nothing
	}
	return nil
}

// RevokeOps are the writes that revoke every certificate recorded under
// prefix as of their read (the returned comparison holds while none was
// added since): each moves to the revocation list, with the reason.
func RevokeOps(ctx context.Context, cli *clientv3.Client, prefix, reason string) ([]clientv3.Op, clientv3.Cmp, []*v1.CertificateRecord, error) {
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, clientv3.Cmp{}, nil, errdefs.Unavailablef("read certificates: %v", err)
	}
	unchanged := clientv3.Compare(clientv3.ModRevision(prefix), "<", resp.Header.Revision+1).WithPrefix()
	var ops []clientv3.Op
	var recs []*v1.CertificateRecord
	now := time.Now()
	for _, kv := range resp.Kvs {
		rec := &v1.CertificateRecord{}
		if proto.Unmarshal(kv.Value, rec) != nil {
			continue
		}
		ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		if !now.Before(time.Unix(0, rec.GetExpiresUnixNano())) {
			continue // expired: refused as such
		}
		op, err := RevokedOp(ctx, cli, rec, reason)
		if err != nil {
			return nil, clientv3.Cmp{}, nil, err
		}
		ops = append(ops, op)
		recs = append(recs, rec)
	}
	return ops, unchanged, recs, nil
}

// RevokedOp is the write that puts rec on the revocation list, with the
// reason, bound to a lease that ends with the certificate.
func RevokedOp(ctx context.Context, cli *clientv3.Client, rec *v1.CertificateRecord, reason string) (clientv3.Op, error) {
	rec = proto.Clone(rec).(*v1.CertificateRecord)
	rec.RevokedUnixNano, rec.Reason = time.Now().UnixNano(), reason
	lease, err := leaseUntil(ctx, cli, rec.GetExpiresUnixNano())
	if err != nil {
		return clientv3.Op{}, err
	}
	b, err := proto.Marshal(rec)
	if err != nil {
		return clientv3.Op{}, err
	}
	return clientv3.OpPut(store.RevokedPrefix+rec.GetSerial(), string(b), clientv3.WithLease(lease)), nil
}

// Revocations is the member's copy of the revocation list, and the
// streams open with each certificate.
type Revocations struct {
	cli *clientv3.Client
	log interface {
		Warn(string, ...any)
	}

	mu      sync.Mutex
	serials map[string]*v1.CertificateRecord
	streams map[string]map[*openStream]struct{} // by the serial of the caller's certificate
	changed chan struct{}                       // closed and replaced on every change
	synced  chan struct{}                       // closed after the first list
	once    sync.Once
}

// openStream is a stream in progress, ended by cancel when its
// certificate is revoked.
type openStream struct {
	cancel context.CancelCauseFunc
}

// NewRevocations is an empty list; Run fills it.
func NewRevocations(cli *clientv3.Client, log interface{ Warn(string, ...any) }) *Revocations {
	return &Revocations{cli: cli, log: log, serials: map[string]*v1.CertificateRecord{}, streams: map[string]map[*openStream]struct{}{},
		changed: make(chan struct{}), synced: make(chan struct{})}
}

// Lookup is the revocation of serial, or nil; it waits for the first list.
func (r *Revocations) Lookup(ctx context.Context, serial string) (*v1.CertificateRecord, error) {
	select {
	case <-r.synced:
	case <-ctx.Done():
		return nil, errdefs.Unavailablef("this member has not read the revocation list yet: %v", ctx.Err())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.serials[serial], nil
}

// Changed is closed at the next change of the list.
func (r *Revocations) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Track registers a stream of the certificate serial until the returned
// function is called.
func (r *Revocations) Track(serial string, cancel context.CancelCauseFunc) (untrack func()) {
	st := &openStream{cancel: cancel}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streams[serial] == nil {
		r.streams[serial] = map[*openStream]struct{}{}
	}
	r.streams[serial][st] = struct{}{}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.streams[serial], st)
		if len(r.streams[serial]) == 0 {
			delete(r.streams, serial)
		}
	}
}

// Run lists the revocation list, then follows it, until ctx ends.
func (r *Revocations) Run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := r.list(ctx)
		if err == nil {
			err = r.watch(ctx, rev)
		}
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, rpctypes.ErrCompacted) {
			r.log.Warn("following the revocation list failed; retrying", "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
	}
}

// list reads the whole list and ends the streams of what is on it.
func (r *Revocations) list(ctx context.Context) (int64, error) {
	resp, err := r.cli.Get(ctx, store.RevokedPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	set := map[string]*v1.CertificateRecord{}
	for _, kv := range resp.Kvs {
		if rec := Decode(kv.Value); rec != nil {
			set[string(kv.Key[len(store.RevokedPrefix):])] = rec
		}
	}
	r.mu.Lock()
	r.serials = set
	for serial, rec := range set {
		r.endStreamsLocked(serial, rec)
	}
	r.changedLocked()
	r.mu.Unlock()
	r.once.Do(func() { close(r.synced) })
	return resp.Header.Revision, nil
}

// watch follows the list from rev until it fails or ctx ends.
func (r *Revocations) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range r.cli.Watch(wctx, store.RevokedPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		r.mu.Lock()
		for _, ev := range resp.Events {
			serial := string(ev.Kv.Key[len(store.RevokedPrefix):])
			if ev.Type == mvccpb.DELETE {
				delete(r.serials, serial)
				continue
			}
			if rec := Decode(ev.Kv.Value); rec != nil {
				r.serials[serial] = rec
				r.endStreamsLocked(serial, rec)
			}
		}
		r.changedLocked()
		r.mu.Unlock()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch channel closed")
}

func (r *Revocations) endStreamsLocked(serial string, rec *v1.CertificateRecord) {
	for st := range r.streams[serial] {
		st.cancel(RevokedError(rec))
	}
}

func (r *Revocations) changedLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Decode is the record b holds, or nil if it holds none.
func Decode(b []byte) *v1.CertificateRecord {
	rec := &v1.CertificateRecord{}
	if proto.Unmarshal(b, rec) != nil {
		return nil
	}
	return rec
}

// RevokedError is the refusal of a revoked certificate.
func RevokedError(rec *v1.CertificateRecord) error {
	who := rec.GetRole() + " " + rec.GetName()
	if rec.GetName() == "" {
		who = "serial " + rec.GetSerial()
	}
	why := rec.GetReason()
	if why == "" {
		why = "revoked by an admin"
	}
	return errdefs.Unauthenticatedf("the certificate of %s (serial %s) was revoked at %s: %s", who, rec.GetSerial(),
		time.Unix(0, rec.GetRevokedUnixNano()).UTC().Format(time.RFC3339), why)
}
