package etcdbalance

import (
	"fmt"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// rpcClass is what an etcd RPC is, as far as routing is concerned. The
// balancer classifies every call by its full gRPC method name; PickInfo
// carries the method but not the request, so a Range is a read whether it
// is serializable or linearizable.
type rpcClass uint8

// The classes.
const (
	// rpcOther calls may go to any voting member (Status to learners too):
	// MemberList, Status, Alarm, LeaseTimeToLive, user and role lookups,
	// and every method this package does not know. The zero value.
	rpcOther rpcClass = iota
	// rpcRead is a Range, or 3.7's RangeStream (a Range answered in chunks).
	rpcRead
	// rpcWrite changes the keyspace, leases, membership or auth and goes
	// through raft: Put, DeleteRange, Txn, Compact, LeaseGrant,
	// LeaseRevoke, member changes, auth changes, and the v3lock/v3election
	// calls that propose (Unlock, Proclaim, Resign). MoveLeader is one too:
	// only the leader serves it.
	rpcWrite
	// rpcStream is a call that lives for a long time: Watch, LeaseKeepAlive,
	// Snapshot, Election Observe, and the calls that block until something
	// happens elsewhere (Lock, Campaign). Streams are counted and spread on
	// their own (picker.Stream), never counted as requests in flight, and
	// give no latency sample.
	rpcStream
)

// kind is the picker bookkeeping the class uses: picker.Stream for rpcStream,
// picker.Unary for everything else.
func (c rpcClass) kind() picker.Kind {
	if c == rpcStream {
		return picker.Stream
	}
	return picker.Unary
}

// String returns the class's name: "other", "read", "write" or "stream".
func (c rpcClass) String() string {
	switch c {
	case rpcOther:
		return "other"
	case rpcRead:
		return "read"
	case rpcWrite:
		return "write"
	case rpcStream:
		return "stream"
	}
	return fmt.Sprintf("Class(%d)", uint8(c))
}

// classify returns the class of a gRPC method given by its full name, as in
// "/etcdserverpb.KV/Range". Unknown methods are rpcOther. It allocates
// nothing.
func classify(method string) rpcClass {
	switch method {
	case "/etcdserverpb.KV/Range",
		methodRangeStream, // 3.7: a Range answered in chunks
		"/v3electionpb.Election/Leader":
		return rpcRead

	case "/etcdserverpb.KV/Put",
		"/etcdserverpb.KV/DeleteRange",
		"/etcdserverpb.KV/Txn",
		"/etcdserverpb.KV/Compact",
		"/etcdserverpb.Lease/LeaseGrant",
		"/etcdserverpb.Lease/LeaseRevoke",
		"/etcdserverpb.Cluster/MemberAdd",
		"/etcdserverpb.Cluster/MemberRemove",
		"/etcdserverpb.Cluster/MemberUpdate",
		"/etcdserverpb.Cluster/MemberPromote",
		"/etcdserverpb.Maintenance/MoveLeader",
		"/etcdserverpb.Auth/AuthEnable",
		"/etcdserverpb.Auth/AuthDisable",
		"/etcdserverpb.Auth/UserAdd",
		"/etcdserverpb.Auth/UserDelete",
		"/etcdserverpb.Auth/UserChangePassword",
		"/etcdserverpb.Auth/UserGrantRole",
		"/etcdserverpb.Auth/UserRevokeRole",
		"/etcdserverpb.Auth/RoleAdd",
		"/etcdserverpb.Auth/RoleDelete",
		"/etcdserverpb.Auth/RoleGrantPermission",
		"/etcdserverpb.Auth/RoleRevokePermission",
		"/v3lockpb.Lock/Unlock",
		"/v3electionpb.Election/Proclaim",
		"/v3electionpb.Election/Resign":
		return rpcWrite

	case "/etcdserverpb.Watch/Watch",
		"/etcdserverpb.Lease/LeaseKeepAlive",
		"/etcdserverpb.Maintenance/Snapshot",
		"/v3electionpb.Election/Observe",
		"/v3electionpb.Election/Campaign",
		"/v3lockpb.Lock/Lock":
		return rpcStream
	}
	return rpcOther
}
