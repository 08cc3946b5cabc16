package etcdbalance

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
)

// unaryInterceptor checks WithMember pins, marks serializable Ranges for
// the picker (PickInfo carries the method, not the request) and, with the
// monotonic guard on, records the highest revision the client has seen and
// re-issues any serializable read answered below it. It is chained after
// clientv3's retry interceptor, so it sees each attempt of a call
// separately.
func (h *handle) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if h.e == nil || isProbe(ctx) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	e := h.e.forConn(cc)
	if err := e.checkPin(ctx); err != nil {
		return err
	}
	rt := e.rt
	rr, _ := req.(*pb.RangeRequest)
	base := ctx // without the mark, for the re-issues
	var mark *readMark
	if rr != nil && (rr.Serializable || len(rr.RangeEnd) > 0) {
		mark = &readMark{serial: rr.Serializable, ranged: len(rr.RangeEnd) > 0}
		ctx = context.WithValue(ctx, readKey{}, mark)
	}
	if rr == nil || !rr.Serializable {
		// Linearizable reads cannot go back: they return at least what was
		// committed when they started, and every revision seen before was
		// committed. Writes and the rest only raise the floor.
		if !rt.set.monotonic {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		g := &e.guard
		floor := g.maxRev.Load()
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil {
			if rev, ok := kvRevision(reply); ok {
				g.linearizable(rev, floor)
			} else if hr, ok := reply.(headered); ok {
				g.observe(hr.GetHeader().GetRevision())
			}
		}
		return err
	}

	if !rt.set.monotonic {
		return rt.serialRead(ctx, method, rr, reply, cc, invoker, opts)
	}
	// The floor is what the client had seen when the call started: calls
	// that overlap are not ordered with each other.
	g := &e.guard
	floor := g.maxRev.Load()
	var p peer.Peer // who answered, should the answer be below the floor
	err := rt.serialRead(ctx, method, rr, reply, cc, invoker, withPeer(opts, &p))
	resp, ok := reply.(*pb.RangeResponse)
	if err != nil || !ok {
		return err
	}
	rev := resp.GetHeader().GetRevision()
	if _, pinned := pinnedMember(ctx); rev >= floor || pinned {
		// A call pinned with WithMember asked for that member's answer.
		g.observe(rev)
		return nil
	}
	return g.reissue(base, e, peerAddr(&p), method, rr, resp, mark.ranged, floor, cc, invoker, opts)
}

// withPeer adds grpc.Peer(p) to a call's options, leaving the caller's
// slice alone.
func withPeer(opts []grpc.CallOption, p *peer.Peer) []grpc.CallOption {
	return append(opts[:len(opts):len(opts)], grpc.Peer(p))
}

// streamInterceptor checks WithMember pins, marks streams whose method
// classify does not know, so that the picker counts them as streams and
// not as requests in flight, and guards RangeStreams.
func (h *handle) streamInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	var e *entry
	if h.e != nil {
		e = h.e.forConn(cc)
		if err := e.checkPin(ctx); err != nil {
			return nil, err
		}
	}
	if classify(method) == rpcOther && (desc.ServerStreams || desc.ClientStreams) {
		ctx = context.WithValue(ctx, streamKey{}, true)
	}
	if e == nil || method != methodRangeStream || !e.rt.set.monotonic {
		return streamer(ctx, desc, cc, method, opts...)
	}
	_, pinned := pinnedMember(ctx)
	s := &guardedRangeStream{
		ctx: ctx, e: e, g: &e.guard, peer: new(peer.Peer), floor: e.guard.maxRev.Load(), pinned: pinned,
		desc: desc, cc: cc, method: method, streamer: streamer, opts: opts,
	}
	cs, err := streamer(context.WithValue(ctx, readKey{}, &readMark{}), desc, cc, method, withPeer(opts, s.peer)...)
	if err != nil {
		return nil, err
	}
	s.ClientStream = cs
	return s, nil
}
