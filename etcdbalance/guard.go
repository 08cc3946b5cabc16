package etcdbalance

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// headered is every etcd response: each carries the revision of the
// member that answered.
type headered interface {
	GetHeader() *pb.ResponseHeader
}

// unaryInterceptor marks serializable Ranges for the picker (PickInfo
// carries the method, not the request) and, with the monotonic guard on,
// records the highest revision the client has seen and re-issues any
// serializable read answered below it. It is chained after clientv3's
// retry interceptor, so it sees each attempt of a call separately.
func (h *handle) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	e := h.e
	if e == nil || isProbe(ctx) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	rt := e.rt
	if !rt.set.monotonic && !rt.viewOn.Load() {
		return invoker(ctx, method, req, reply, cc, opts...) // nothing to mark or check
	}
	rr, _ := req.(*pb.RangeRequest)
	if rr == nil || !rr.Serializable {
		// Linearizable reads cannot go back: they return at least what was
		// committed when they started, and every revision seen before was
		// committed. Writes and the rest only raise the floor.
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil && rt.set.monotonic {
			if hr, ok := reply.(headered); ok {
				rt.observe(hr.GetHeader().GetRevision())
			}
		}
		return err
	}

	// The floor is what the client had seen when the call started: calls
	// that overlap are not ordered with each other.
	floor := rt.maxRev.Load()
	if rt.set.monotonic {
		rt.expireBehind()
	}
	mark := &readMark{}
	err := invoker(context.WithValue(ctx, readKey{}, mark), method, req, reply, cc, opts...)
	resp, ok := reply.(*pb.RangeResponse)
	if err != nil || !rt.set.monotonic || !ok {
		return err
	}
	rev := resp.GetHeader().GetRevision()
	if _, pinned := pinnedMember(ctx); rev >= floor || pinned {
		// A call pinned with WithMember asked for that member's answer.
		rt.observe(rev)
		return nil
	}
	return rt.reissue(ctx, method, rr, resp, mark.addr, floor, cc, invoker, opts)
}

// reissue gets an answer at or above floor for a serializable read that a
// member (addr) answered below it: first from another member (addr is
// tagged behind, so no guarded read goes there until a probe shows it has
// caught up), then from the leader, then as a linearizable read, which
// cannot be below floor. Steps that need the cluster view are skipped
// without one. The answer is copied into resp.
func (rt *router) reissue(ctx context.Context, method string, req *pb.RangeRequest, resp *pb.RangeResponse, addr string, floor int64, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) error {
	rt.stale.Add(1)
	call := func(req *pb.RangeRequest, mark *readMark) (*pb.RangeResponse, error) {
		cctx := ctx
		if mark != nil {
			cctx = context.WithValue(ctx, readKey{}, mark)
		}
		fresh := new(pb.RangeResponse)
		return fresh, invoker(cctx, method, req, fresh, cc, opts...)
	}
	accept := func(fresh *pb.RangeResponse) {
		*resp = *fresh
		rt.observe(fresh.GetHeader().GetRevision())
	}
	if v := rt.view.Load(); v != nil {
		v.markBehind(addr, floor)
		for _, leader := range [...]bool{false, true} {
			if leader {
				if !v.leaderKnown() {
					break
				}
				rt.retryLeader.Add(1)
			} else {
				rt.retryElsewhere.Add(1)
			}
			mark := &readMark{leader: leader}
			fresh, err := call(req, mark)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				continue // the next step may still work
			}
			if fresh.GetHeader().GetRevision() >= floor {
				accept(fresh)
				return nil
			}
			v.markBehind(mark.addr, floor)
		}
	}
	rt.retryLinear.Add(1)
	lin := *req
	lin.Serializable = false
	fresh, err := call(&lin, nil)
	if err != nil {
		return err
	}
	if fresh.GetHeader().GetRevision() < floor {
		// Only possible if the endpoints now belong to another cluster:
		// hand the answer over rather than fail a read that succeeded.
		rt.unfixed.Add(1)
	}
	accept(fresh)
	return nil
}
