package etcdbalance

import (
	"testing"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		method string
		want   rpcClass
	}{
		// KV
		{"/etcdserverpb.KV/Range", rpcRead},
		{"/etcdserverpb.KV/Put", rpcWrite},
		{"/etcdserverpb.KV/DeleteRange", rpcWrite},
		{"/etcdserverpb.KV/Txn", rpcWrite},
		{"/etcdserverpb.KV/Compact", rpcWrite},
		// Watch
		{"/etcdserverpb.Watch/Watch", rpcStream},
		// Lease
		{"/etcdserverpb.Lease/LeaseGrant", rpcWrite},
		{"/etcdserverpb.Lease/LeaseRevoke", rpcWrite},
		{"/etcdserverpb.Lease/LeaseKeepAlive", rpcStream},
		{"/etcdserverpb.Lease/LeaseTimeToLive", rpcOther},
		{"/etcdserverpb.Lease/LeaseLeases", rpcOther},
		// Cluster
		{"/etcdserverpb.Cluster/MemberAdd", rpcWrite},
		{"/etcdserverpb.Cluster/MemberRemove", rpcWrite},
		{"/etcdserverpb.Cluster/MemberUpdate", rpcWrite},
		{"/etcdserverpb.Cluster/MemberPromote", rpcWrite},
		{"/etcdserverpb.Cluster/MemberList", rpcOther},
		// Maintenance
		{"/etcdserverpb.Maintenance/Snapshot", rpcStream},
		{"/etcdserverpb.Maintenance/Status", rpcOther},
		{"/etcdserverpb.Maintenance/Alarm", rpcOther},
		{"/etcdserverpb.Maintenance/Defragment", rpcOther},
		{"/etcdserverpb.Maintenance/Hash", rpcOther},
		{"/etcdserverpb.Maintenance/HashKV", rpcOther},
		{"/etcdserverpb.Maintenance/MoveLeader", rpcWrite},
		{"/etcdserverpb.Maintenance/Downgrade", rpcOther},
		// Auth: changes are writes, lookups any member.
		{"/etcdserverpb.Auth/AuthEnable", rpcWrite},
		{"/etcdserverpb.Auth/AuthDisable", rpcWrite},
		{"/etcdserverpb.Auth/UserAdd", rpcWrite},
		{"/etcdserverpb.Auth/UserDelete", rpcWrite},
		{"/etcdserverpb.Auth/UserChangePassword", rpcWrite},
		{"/etcdserverpb.Auth/UserGrantRole", rpcWrite},
		{"/etcdserverpb.Auth/UserRevokeRole", rpcWrite},
		{"/etcdserverpb.Auth/RoleAdd", rpcWrite},
		{"/etcdserverpb.Auth/RoleDelete", rpcWrite},
		{"/etcdserverpb.Auth/RoleGrantPermission", rpcWrite},
		{"/etcdserverpb.Auth/RoleRevokePermission", rpcWrite},
		{"/etcdserverpb.Auth/Authenticate", rpcOther},
		{"/etcdserverpb.Auth/AuthStatus", rpcOther},
		{"/etcdserverpb.Auth/UserGet", rpcOther},
		{"/etcdserverpb.Auth/UserList", rpcOther},
		{"/etcdserverpb.Auth/RoleGet", rpcOther},
		{"/etcdserverpb.Auth/RoleList", rpcOther},
		// Concurrency services of the gRPC proxy and server.
		{"/v3lockpb.Lock/Lock", rpcStream},
		{"/v3lockpb.Lock/Unlock", rpcWrite},
		{"/v3electionpb.Election/Campaign", rpcStream},
		{"/v3electionpb.Election/Observe", rpcStream},
		{"/v3electionpb.Election/Proclaim", rpcWrite},
		{"/v3electionpb.Election/Resign", rpcWrite},
		{"/v3electionpb.Election/Leader", rpcRead},
		// Unknown.
		{"", rpcOther},
		{"/grpc.health.v1.Health/Check", rpcOther},
		{"/grpc.health.v1.Health/Watch", rpcOther},
		{"/etcdserverpb.KV/range", rpcOther},
		{"etcdserverpb.KV/Range", rpcOther},
	}
	for _, c := range cases {
		if got := classify(c.method); got != c.want {
			t.Errorf("Classify(%q) = %v, want %v", c.method, got, c.want)
		}
	}
}

func TestClassKind(t *testing.T) {
	for c, want := range map[rpcClass]picker.Kind{rpcOther: picker.Unary, rpcRead: picker.Unary, rpcWrite: picker.Unary, rpcStream: picker.Stream} {
		if got := c.kind(); got != want {
			t.Errorf("%v.kind() = %v, want %v", c, got, want)
		}
	}
	if s := rpcClass(9).String(); s != "Class(9)" {
		t.Errorf("Class(9).String() = %q", s)
	}
}

func TestClassifyAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = classify("/etcdserverpb.Auth/RoleRevokePermission") }); n != 0 {
		t.Errorf("Classify allocates %v times", n)
	}
}
