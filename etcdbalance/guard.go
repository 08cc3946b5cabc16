package etcdbalance

import (
	"context"
	"sync"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// headered is every etcd response: each carries the revision of the
// member that answered.
type headered interface {
	GetHeader() *pb.ResponseHeader
}

// guard is the monotonic-read state of one client: the highest revision it
// has seen, and the counters ClusterView reports. It belongs to one client,
// not to the options value the client was built with: an apiserver builds
// its main and its events client from the same options, and their
// revisions must not mix.
type guard struct {
	maxRev         atomic.Int64 // highest response revision seen
	stale          atomic.Int64 // serializable reads answered below the floor
	retryElsewhere atomic.Int64 // re-issued to another member
	retryLeader    atomic.Int64 // re-issued to the leader
	retryLinear    atomic.Int64 // re-issued as linearizable
	resets         atomic.Int64 // floor lowered: the cluster's revision went back
}

// guards finds a client's guard from the channel a call runs on. clientv3
// names every channel of a client (its own, and the throwaway ones that
// Maintenance.Status and friends dial) with a target that holds the
// client's address, so the canonical target tells clients apart and keeps
// a client's throwaway channels with it.
type guards struct {
	last atomic.Pointer[guardSlot] // the last one found: nearly every call's

	mu       sync.Mutex
	byTarget map[string]*guard
}

type guardSlot struct {
	target string
	g      *guard
}

func (gs *guards) of(cc *grpc.ClientConn) *guard {
	var target string
	if cc != nil { // unit tests call the interceptor without a channel
		target = cc.CanonicalTarget()
	}
	if s := gs.last.Load(); s != nil && s.target == target {
		return s.g
	}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g := gs.byTarget[target]
	if g == nil {
		if gs.byTarget == nil {
			gs.byTarget = map[string]*guard{}
		}
		g = new(guard)
		gs.byTarget[target] = g
	}
	gs.last.Store(&guardSlot{target: target, g: g})
	return g
}

// lookup returns the guard of the client whose channel has target, or nil.
func (gs *guards) lookup(target string) *guard {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return gs.byTarget[target]
}

// observe raises the highest revision seen to rev.
func (g *guard) observe(rev int64) {
	for {
		cur := g.maxRev.Load()
		if rev <= cur || g.maxRev.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// linearizable takes the revision of an answer that etcd linearizes (a
// write, a linearizable read) to a call that started when the client had
// seen floor. Such an answer is never below floor in one cluster: if it
// is, the cluster's revision went back (a restore from an older snapshot,
// or endpoints moved to another cluster), and keeping the old floor would
// make every serializable read cost a re-issue, forever. The floor drops
// to the answer, once per such event, with a log line.
func (g *guard) linearizable(rev, floor int64) {
	if rev <= 0 || rev >= floor {
		g.observe(rev)
		return
	}
	for {
		cur := g.maxRev.Load()
		if cur < floor {
			// Already lowered by a concurrent call.
			g.observe(rev)
			return
		}
		if g.maxRev.CompareAndSwap(cur, rev) {
			g.resets.Add(1)
			logger.Warningf("etcdbalance: the cluster answered a linearizable call at revision %d, below revision %d that this client had seen: its revision went back (restored from an older snapshot, or the endpoints now reach another cluster); monotonic reads restart from revision %d", rev, cur, rev)
			return
		}
	}
}

// kvRevision returns the revision of a KV answer (Range, Put, DeleteRange,
// Txn), which etcd sets from the store; other answers (leases, members,
// maintenance) carry revisions that prove nothing about going back.
func kvRevision(reply any) (int64, bool) {
	switch r := reply.(type) {
	case *pb.RangeResponse, *pb.PutResponse, *pb.DeleteRangeResponse, *pb.TxnResponse:
		return r.(headered).GetHeader().GetRevision(), true
	}
	return 0, false
}

// unaryInterceptor checks WithMember pins, marks serializable Ranges for
// the picker (PickInfo carries the method, not the request) and, with the
// monotonic guard on, records the highest revision the client has seen and
// re-issues any serializable read answered below it. It is chained after
// clientv3's retry interceptor, so it sees each attempt of a call
// separately.
func (h *handle) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	e := h.e
	if e == nil || isProbe(ctx) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
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
		g := e.guards.of(cc)
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
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	// The floor is what the client had seen when the call started: calls
	// that overlap are not ordered with each other.
	g := e.guards.of(cc)
	floor := g.maxRev.Load()
	rt.expireBehind()
	err := invoker(ctx, method, req, reply, cc, opts...)
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
	return g.reissue(base, rt, method, rr, resp, mark, floor, cc, invoker, opts)
}

// reissue gets an answer at or above floor for a serializable read that a
// member (addr) answered below it: first from another member (addr is
// tagged behind, so no guarded read goes there until a probe shows it has
// caught up), then from the leader, then as a linearizable read, which
// cannot be below floor in the same cluster. ctx is the call's context
// without first, the read mark of the first attempt. Steps that need the cluster
// view are skipped without one. Each attempt is decoded into resp (grpc
// resets it first), so the caller gets the last answer.
func (g *guard) reissue(ctx context.Context, rt *router, method string, req *pb.RangeRequest, resp *pb.RangeResponse, first *readMark, floor int64, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) error {
	g.stale.Add(1)
	if v := rt.view.Load(); v != nil {
		v.markBehind(first.addr, floor)
		for _, leader := range [...]bool{false, true} {
			if leader {
				if !v.leaderKnown() {
					break
				}
				g.retryLeader.Add(1)
			} else {
				g.retryElsewhere.Add(1)
			}
			mark := &readMark{serial: true, ranged: first.ranged, leader: leader}
			err := invoker(context.WithValue(ctx, readKey{}, mark), method, req, resp, cc, opts...)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				continue // the next step may still work
			}
			if resp.GetHeader().GetRevision() >= floor {
				g.observe(resp.GetHeader().GetRevision())
				return nil
			}
			v.markBehind(mark.addr, floor)
		}
	}
	g.retryLinear.Add(1)
	// The request is this call's own (clientv3 builds one per call), and
	// the retry interceptor reuses it only after this returns.
	req.Serializable = false
	lctx := ctx
	if first.ranged {
		lctx = context.WithValue(ctx, readKey{}, &readMark{ranged: true})
	}
	err := invoker(lctx, method, req, resp, cc, opts...)
	req.Serializable = true
	if err != nil {
		return err
	}
	g.linearizable(resp.GetHeader().GetRevision(), floor)
	return nil
}

// rangeStreamResponse is 3.7's RangeStreamResponse, which 3.6's API lacks:
// each chunk carries part of a RangeResponse, and the last one its header.
type rangeStreamResponse interface {
	GetRangeResponse() *pb.RangeResponse
}

// guardedRangeStream applies the monotonic guard to a RangeStream (3.7's
// chunked Range). Its revision arrives with the last chunk, after the
// others were handed over, so a serializable one answered below the floor
// cannot be re-issued in place: its end is turned into an error, which the
// caller sees in place of the end of the stream, and the member is tagged
// behind as for a unary read.
type guardedRangeStream struct {
	grpc.ClientStream
	rt     *router
	g      *guard
	mark   *readMark
	floor  int64
	serial bool
}

func (s *guardedRangeStream) SendMsg(m any) error {
	if rr, ok := m.(*pb.RangeRequest); ok {
		s.serial = rr.Serializable
	}
	return s.ClientStream.SendMsg(m)
}

func (s *guardedRangeStream) RecvMsg(m any) error {
	if err := s.ClientStream.RecvMsg(m); err != nil {
		return err
	}
	c, ok := m.(rangeStreamResponse)
	if !ok {
		return nil
	}
	rev := c.GetRangeResponse().GetHeader().GetRevision()
	switch {
	case rev == 0: // not the last chunk
	case !s.serial:
		s.g.linearizable(rev, s.floor)
	case rev >= s.floor:
		s.g.observe(rev)
	default:
		s.g.stale.Add(1)
		if v := s.rt.view.Load(); v != nil {
			v.markBehind(s.mark.addr, s.floor)
		}
		return status.Errorf(codes.Unavailable, "etcdbalance: member %s answered a serializable RangeStream at revision %d, below revision %d that this client had already seen; the answer is withheld, retry the call", s.mark.addr, rev, s.floor)
	}
	return nil
}

// streamInterceptor checks WithMember pins, marks streams whose method
// Classify does not know, so that the picker counts them as streams and
// not as requests in flight, and guards RangeStreams.
func (h *handle) streamInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	e := h.e
	if e != nil {
		if err := e.checkPin(ctx); err != nil {
			return nil, err
		}
	}
	if Classify(method) == Other && (desc.ServerStreams || desc.ClientStreams) {
		ctx = context.WithValue(ctx, streamKey{}, true)
	}
	if e == nil || method != methodRangeStream || !e.rt.set.monotonic {
		return streamer(ctx, desc, cc, method, opts...)
	}
	g := e.guards.of(cc)
	s := &guardedRangeStream{rt: e.rt, g: g, mark: &readMark{}, floor: g.maxRev.Load()}
	e.rt.expireBehind()
	cs, err := streamer(context.WithValue(ctx, readKey{}, s.mark), desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	s.ClientStream = cs
	return s, nil
}
