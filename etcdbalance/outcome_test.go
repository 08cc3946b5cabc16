package etcdbalance

import (
	"context"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestMemberFault is the error classification table: which answers are
// the member's fault (charged to it, counted toward ejection, moved
// elsewhere on retry) and which are the caller's or an application
// answer (no charge).
func TestMemberFault(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"too many requests (apply behind commit)", rpctypes.ErrGRPCRequestTooManyRequests, true},
		{"unavailable", status.Error(codes.Unavailable, "connection error: connection refused"), true},
		{"no leader", rpctypes.ErrGRPCNoLeader, true},
		{"leader changed", rpctypes.ErrGRPCLeaderChanged, true},

		{"nil", nil, false},
		{"received message larger than max", status.Error(codes.ResourceExhausted, "grpc: received message larger than max (5242880 vs. 4194304)"), false},
		{"trying to send message larger than max", status.Error(codes.ResourceExhausted, "grpc: trying to send message larger than max (5242880 vs. 4194304)"), false},
		{"invalid argument", rpctypes.ErrGRPCEmptyKey, false},
		{"not found", rpctypes.ErrGRPCLeaseNotFound, false},
		{"failed precondition", rpctypes.ErrGRPCLeaseExist, false},
		{"permission denied", rpctypes.ErrGRPCPermissionDenied, false},
		{"canceled", status.Error(codes.Canceled, "context canceled"), false},
		{"context canceled", context.Canceled, false},
	} {
		if got := memberFault(tc.err); got != tc.want {
			t.Errorf("memberFault(%s: %v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
