package etcdbalance

import (
	"testing"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		method string
		want   Class
	}{
		// KV
		{"/etcdserverpb.KV/Range", Read},
		{"/etcdserverpb.KV/Put", Write},
		{"/etcdserverpb.KV/DeleteRange", Write},
		{"/etcdserverpb.KV/Txn", Write},
		{"/etcdserverpb.KV/Compact", Write},
		// Watch
		{"/etcdserverpb.Watch/Watch", Stream},
		// Lease
		{"/etcdserverpb.Lease/LeaseGrant", Write},
		{"/etcdserverpb.Lease/LeaseRevoke", Write},
		{"/etcdserverpb.Lease/LeaseKeepAlive", Stream},
		{"/etcdserverpb.Lease/LeaseTimeToLive", Other},
		{"/etcdserverpb.Lease/LeaseLeases", Other},
		// Cluster
		{"/etcdserverpb.Cluster/MemberAdd", Write},
		{"/etcdserverpb.Cluster/MemberRemove", Write},
		{"/etcdserverpb.Cluster/MemberUpdate", Write},
		{"/etcdserverpb.Cluster/MemberPromote", Write},
		{"/etcdserverpb.Cluster/MemberList", Other},
		// Maintenance
		{"/etcdserverpb.Maintenance/Snapshot", Stream},
		{"/etcdserverpb.Maintenance/Status", Other},
		{"/etcdserverpb.Maintenance/Alarm", Other},
		{"/etcdserverpb.Maintenance/Defragment", Other},
		{"/etcdserverpb.Maintenance/Hash", Other},
		{"/etcdserverpb.Maintenance/HashKV", Other},
		{"/etcdserverpb.Maintenance/MoveLeader", Write},
		{"/etcdserverpb.Maintenance/Downgrade", Other},
		// Auth: changes are writes, lookups any member.
		{"/etcdserverpb.Auth/AuthEnable", Write},
		{"/etcdserverpb.Auth/AuthDisable", Write},
		{"/etcdserverpb.Auth/UserAdd", Write},
		{"/etcdserverpb.Auth/UserDelete", Write},
		{"/etcdserverpb.Auth/UserChangePassword", Write},
		{"/etcdserverpb.Auth/UserGrantRole", Write},
		{"/etcdserverpb.Auth/UserRevokeRole", Write},
		{"/etcdserverpb.Auth/RoleAdd", Write},
		{"/etcdserverpb.Auth/RoleDelete", Write},
		{"/etcdserverpb.Auth/RoleGrantPermission", Write},
		{"/etcdserverpb.Auth/RoleRevokePermission", Write},
		{"/etcdserverpb.Auth/Authenticate", Other},
		{"/etcdserverpb.Auth/AuthStatus", Other},
		{"/etcdserverpb.Auth/UserGet", Other},
		{"/etcdserverpb.Auth/UserList", Other},
		{"/etcdserverpb.Auth/RoleGet", Other},
		{"/etcdserverpb.Auth/RoleList", Other},
		// Concurrency services of the gRPC proxy and server.
		{"/v3lockpb.Lock/Lock", Stream},
		{"/v3lockpb.Lock/Unlock", Write},
		{"/v3electionpb.Election/Campaign", Stream},
		{"/v3electionpb.Election/Observe", Stream},
		{"/v3electionpb.Election/Proclaim", Write},
		{"/v3electionpb.Election/Resign", Write},
		{"/v3electionpb.Election/Leader", Read},
		// Unknown.
		{"", Other},
		{"/grpc.health.v1.Health/Check", Other},
		{"/grpc.health.v1.Health/Watch", Other},
		{"/etcdserverpb.KV/range", Other},
		{"etcdserverpb.KV/Range", Other},
	}
	for _, c := range cases {
		if got := Classify(c.method); got != c.want {
			t.Errorf("Classify(%q) = %v, want %v", c.method, got, c.want)
		}
	}
}

func TestClassKind(t *testing.T) {
	for c, want := range map[Class]picker.Kind{Other: picker.Unary, Read: picker.Unary, Write: picker.Unary, Stream: picker.Stream} {
		if got := c.Kind(); got != want {
			t.Errorf("%v.Kind() = %v, want %v", c, got, want)
		}
	}
	if s := Class(9).String(); s != "Class(9)" {
		t.Errorf("Class(9).String() = %q", s)
	}
}

func TestClassifyAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = Classify("/etcdserverpb.Auth/RoleRevokePermission") }); n != 0 {
		t.Errorf("Classify allocates %v times", n)
	}
}
