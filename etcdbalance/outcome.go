package etcdbalance

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// outcome maps how a call ended to what it says about the member. A call
// that ended without error but received nothing never ran (grpc found the
// connection gone after the pick and picks again): Canceled, neither a
// sample nor a blame. Errors go by memberFault.
func outcome(info balancer.DoneInfo, timeout time.Duration) picker.Outcome {
	err := info.Err
	switch {
	case err == nil && !info.BytesReceived:
		return picker.Outcome{Result: picker.Canceled}
	case err == nil:
		return picker.Outcome{}
	case errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
		return picker.Outcome{Result: picker.DeadlineExceeded, Timeout: timeout}
	case errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled:
		return picker.Outcome{Result: picker.Canceled}
	case memberFault(err):
		return picker.Outcome{Result: picker.Failed}
	}
	return picker.Outcome{} // an answer: the member did its job
}

// memberFault reports whether an error blames the member that returned it:
// such a call is charged as a slow sample, counts toward ejection (so a
// write-preferred leader that keeps failing stops being preferred until it
// answers again), and its retries go elsewhere. Any other error is an
// answer: the member did its job, the caller or the data made the call
// fail.
//
//	code                 etcd or grpc text                         whose fault
//	-------------------  ----------------------------------------  ---------------------------------
//	Unavailable          "no leader", "leader changed", "request   member: it cannot serve now
//	                     timed out", connection refused or reset
//	ResourceExhausted    "etcdserver: too many requests"           member: its apply lags its commit
//	                                                               by 5000 entries (defrag, slow disk)
//	ResourceExhausted    "grpc: received message larger than       caller: its own message limits
//	                     max", "trying to send message larger"
//	ResourceExhausted    "etcdserver: mvcc: database space         cluster: the NOSPACE alarm holds on
//	                     exceeded"                                 every member; moving does not help
//	Internal             grpc: malformed frame, stream reset with  member: its transport or its
//	                     an internal error, a decoding failure     process misbehaved
//	Unknown              an error the server did not map to a      member: etcd maps every error it
//	                     status (a bug, a panic in a handler)      means to return
//	DeadlineExceeded     the call's deadline passed                charged the deadline (picker)
//	Canceled             the caller gave up                        nobody
//	InvalidArgument,     bad request, key not found, failed        caller or data: an answer
//	NotFound, Already-   precondition ("rpc not supported for
//	Exists, Failed-      learner" included: the member's role,
//	Precondition,        which the routing handles, not its
//	PermissionDenied,    health), auth errors, compacted
//	Unauthenticated,     revision, and the rest
//	OutOfRange, ...
func memberFault(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Unavailable, codes.Internal, codes.Unknown:
		return true
	case codes.ResourceExhausted:
		return strings.Contains(st.Message(), "too many requests")
	}
	return false
}
