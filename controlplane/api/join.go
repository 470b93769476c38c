package api

import (
	"context"
	"maps"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/certrecords"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A node's name is bound to it from its join on: the join creates the
// node's record (with the labels its token grants) and records the
// certificate it issues. Another join cannot take the name while the
// record or an unexpired certificate of that name exists, whether the node
// is Ready or not, unless an admin frees it — by removing the node, which
// revokes its certificates, or by making a token for that very name, whose
// join revokes the certificates the name held before.

// Join issues a node certificate to an agent presenting a valid join
// token, for the key in its certificate request.
func (a *agentAPI) Join(ctx context.Context, req *v1.JoinRequest) (*v1.JoinResponse, error) {
	tok, tokRev, err := a.s.checkToken(ctx, req.GetToken(), TokenRoleAgent)
	if err != nil {
		return nil, err
	}
	name := req.GetNode()
	if err := workloads.ValidateNodeName(name); err != nil {
		return nil, err
	}
	if tok.GetNode() != "" && tok.GetNode() != name {
		return nil, errdefs.Deniedf("join token %s admits node %s only, not %s", tok.GetId(), tok.GetNode(), name)
	}
	cli := a.s.store.Client
	nodeKey := a.s.store.Nodes.Key(name)
	cur, err := cli.Get(ctx, nodeKey)
	if err != nil {
		return nil, errdefs.Unavailablef("read node %s: %v", name, err)
	}
	takeover := tok.GetNode() == name
	asked := req.GetLabels()
	if len(cur.Kvs) > 0 && takeover {
		// A name taken over keeps its labels: asking for them again is
		// asking for nothing new.
		prev, err := a.s.store.Nodes.Decode(cur.Kvs[0].Value)
		if err != nil {
			return nil, err
		}
		asked = maps.Clone(asked)
		maps.DeleteFunc(asked, func(k, v string) bool { return prev.GetLabels()[k] == v })
	}
	labels, err := grantedLabels(tok, asked)
	if err != nil {
		return nil, err
	}
	revoke, certsUnchanged, held, err := certrecords.RevokeOps(ctx, cli, certrecords.Prefix(auth.RoleNode, name), "node "+name+" joined again with a token made for its name")
	if err != nil {
		return nil, err
	}
	if (len(cur.Kvs) > 0 || len(held) > 0) && !takeover {
		return nil, errdefs.Preconditionf("node %s has joined already (its name is bound to its certificate): a second agent cannot take it; choose another --name, or have an admin free the name ('wasmorch node rm %s', or a token for it: 'wasmorch token create --node %s')", name, name, name)
	}

	certPEM, err := a.s.sec.ca.SignRequest(req.GetCsr(), auth.Identity{Role: auth.RoleNode, Name: name}, time.Now())
	if err != nil {
		return nil, err
	}
	rec, err := certrecords.New(certPEM, auth.Identity{Role: auth.RoleNode, Name: name}, tok.GetId())
	if err != nil {
		return nil, err
	}
	record, _, err := certrecords.PutOp(ctx, cli, rec)
	if err != nil {
		return nil, err
	}
	used := proto.Clone(tok).(*v1.JoinToken)
	used.Used++
	tokBytes, err := proto.Marshal(used)
	if err != nil {
		return nil, err
	}
	cmps := []clientv3.Cmp{certsUnchanged, clientv3.Compare(clientv3.ModRevision(tokensPrefix+tok.GetId()), "=", tokRev)}
	ops := append(revoke, record, clientv3.OpPut(tokensPrefix+tok.GetId(), string(tokBytes)))
	node := &v1.Node{Name: name, Labels: labels}
	if len(cur.Kvs) > 0 {
		// A name taken over: the node keeps its record, and its labels
		// unless the token sets some.
		prev, err := a.s.store.Nodes.Decode(cur.Kvs[0].Value)
		if err != nil {
			return nil, err
		}
		node = proto.Clone(prev).(*v1.Node)
		if node.Labels == nil {
			node.Labels = map[string]string{}
		}
		maps.Copy(node.Labels, labels)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(nodeKey), "=", cur.Kvs[0].ModRevision))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(nodeKey), "=", 0))
	}
	put, err := a.s.store.Nodes.PutOp(name, node)
	if err != nil {
		return nil, err
	}
	resp, err := cli.Txn(ctx).If(cmps...).Then(append(ops, put)...).Commit()
	if err != nil {
		return nil, errdefs.Unavailablef("join node %s: %v", name, err)
	}
	if !resp.Succeeded {
		return nil, errdefs.Conflictf("node %s or join token %s changed while it joined; try again", name, tok.GetId())
	}
	a.s.log.Info("node joined with a token; issued its certificate", "node", name, "token", tok.GetId(), "labels", FormatLabels(node.GetLabels()),
		"serial", rec.GetSerial(), "replaced certificates", len(held))
	return &v1.JoinResponse{Certificate: certPEM, CaCertificate: a.s.sec.ca.CertPEM}, nil
}

// RenewCertificate issues the calling node a new certificate for the key
// in its request; the name comes from the certificate it calls with, which
// the interceptor has checked against the revocation list.
func (a *agentAPI) RenewCertificate(ctx context.Context, req *v1.RenewRequest) (*v1.JoinResponse, error) {
	id, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if id.Role != auth.RoleNode {
		return nil, errdefs.Deniedf("only nodes renew their certificates here; %s is not a node", id)
	}
	certPEM, err := a.s.sec.ca.SignRequest(req.GetCsr(), id, time.Now())
	if err != nil {
		return nil, err
	}
	rec, err := certrecords.New(certPEM, id, "")
	if err != nil {
		return nil, err
	}
	// Recorded only while the node exists: a removal reads the records it
	// revokes, and fails if one is added after its read; this write fails
	// if it comes after the removal. Either way no certificate of a
	// removed node escapes the revocation.
	op, lease, err := certrecords.PutOp(ctx, a.s.store.Client, rec)
	if err != nil {
		return nil, err
	}
	resp, err := a.s.store.Client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(a.s.store.Nodes.Key(id.Name)), ">", 0)).Then(op).Commit()
	if err != nil {
		return nil, errdefs.Unavailablef("record the certificate of %s: %v", id, err)
	}
	if !resp.Succeeded {
		_, _ = a.s.store.Client.Revoke(ctx, lease)
		return nil, errdefs.Unauthenticatedf("node %s is not in the cluster (removed): it must join again with a token", id.Name)
	}
	return &v1.JoinResponse{Certificate: certPEM, CaCertificate: a.s.sec.ca.CertPEM}, nil
}
