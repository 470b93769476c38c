package store

// The key layout: every key wasmorch writes in etcd, in one place. Values
// are protobuf messages unless said otherwise.
//
//	/wasmorch/workloads/<name>            v1.Workload
//	/wasmorch/revisions/<name>/<gen>      v1.Revision (immutable)
//	/wasmorch/instances/<id>              v1.Instance: desired state, written by the controllers
//	/wasmorch/status/<id>                 v1.InstanceStatus: observed state, written by the workers
//	/wasmorch/nodes/<name>                v1.Node
//	/wasmorch/alive/<name>                empty, bound to the node's liveness lease
//	/wasmorch/routes/<host>/<route>       the name of the workload holding an HTTP route
//	/wasmorch/ports/<port>                the name of the workload holding a node TCP port (--tcp)
//	/wasmorch/fnload/<workload>/<member>  v1.FunctionLoad, bound to the gateway's lease
//	/wasmorch/configs/<name>              v1.Config
//	/wasmorch/secrets/<name>              v1.Secret (sealed)
//	/wasmorch/secretkeys/<id>             v1.SecretKey (wrapped)
//	/wasmorch/secretkey-current           the id of the data key that seals new secrets
//	/wasmorch/blobs/<hex>/meta, /chunk/N  v1.BlobMeta, raw bytes
//	/wasmorch/events/<object>/<time>      v1.Event, bound to a shared lease
//	/wasmorch/tokens/<id>                 v1.JoinToken
//	/wasmorch/certs/<role>/<name>/<serial> v1.CertificateRecord: a node or admin certificate issued, until it expires (lease)
//	/wasmorch/revoked/<serial>            v1.CertificateRecord: a revoked certificate, until it would have expired (lease)
//	/wasmorch/joining/<member id>         the name of a member added to etcd that has not started yet (text)
//	/wasmorch/members/<name>              v1.Member, bound to the member's lease
//	/wasmorch/election/controllers/...    etcd's election of the controllers' leader
//	/wasmorch/pki/bootstrap-secrets-key   the secrets key of a static bootstrap
//	/wasmorch/volumes/<name>              v1.Volume: a named volume and the node it lives on
//	/wasmorch/volumes-removed/<node>/<uid> v1.Volume: a removed volume whose directory its node is to delete
//	/wasmorch/cloud/scaleups/<group>      the scale-up in flight of a node group (JSON; controlplane/cloud)
//	/wasmorch/cloud/asked/<node>          when a node asked of a provider was asked for, until it joins (JSON; controlplane/cloud)

// Root is the prefix of every key wasmorch writes.
const Root = "/wasmorch/"

// Key prefixes, one per kind of record.
const (
	WorkloadsPrefix = Root + "workloads/"
	InstancesPrefix = Root + "instances/"
	StatusPrefix    = Root + "status/"
	NodesPrefix     = Root + "nodes/"
	AlivePrefix     = Root + "alive/" // a node's liveness key, bound to its lease
	BlobsPrefix     = Root + "blobs/"
	ElectionPrefix  = Root + "election/controllers"
	EventsPrefix    = Root + "events/"
	MembersPrefix   = Root + "members/"
	TokensPrefix    = Root + "tokens/"
	CloudPrefix     = Root + "cloud/" // the cloud controller's records
	// CertsPrefix holds the node and admin certificates the CA issued
	// while they are valid, by role and name (what 'node rm' revokes);
	// RevokedPrefix the revocation list, by serial, which every member
	// follows in memory and checks on every call.
	CertsPrefix   = Root + "certs/"
	RevokedPrefix = Root + "revoked/"
	// JoiningPrefix names the members added to etcd that have not started
	// yet (etcd knows only their peer URLs): a retried join finds its own.
	JoiningPrefix = Root + "joining/"
	// RoutesPrefix holds one claim per HTTP route and host (see
	// gateway.ClaimRoute).
	RoutesPrefix = Root + "routes/"
	// PortsPrefix holds one claim per node TCP port a plain TCP service
	// serves on (see workloads.ClaimPort).
	PortsPrefix = Root + "ports/"
	// LoadsPrefix holds each gateway's load per function.
	LoadsPrefix = Root + "fnload/"
	// configs
	ConfigsPrefix    = Root + "configs/"
	SecretsPrefix    = Root + "secrets/"    // sealed: see controlplane/secretbox
	SecretKeysPrefix = Root + "secretkeys/" // data keys, wrapped under the member key
	CurrentSecretKey = Root + "secretkey-current"
	// BootstrapSecretsKey is the secrets key members of a static
	// bootstrap agree on.
	BootstrapSecretsKey = Root + "pki/bootstrap-secrets-key"
	// rollouts: one immutable record per generation, <workload>/<generation>
	RevisionsPrefix = Root + "revisions/"
	// state: named volumes
	VolumesPrefix = Root + "volumes/"
	// RemovedVolumesPrefix holds, per node, the volumes removed whose
	// directories the node has not deleted yet.
	RemovedVolumesPrefix = Root + "volumes-removed/"
)
