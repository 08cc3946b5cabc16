package etcdbalance

import (
	"context"
	"io"
	"reflect"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// headered is every etcd response: each carries the revision of the
// member that answered.
type headered interface {
	GetHeader() *pb.ResponseHeader
}

// guard is the monotonic-read state of one client (of its entry): the
// highest revision it has seen, and the counters ClusterView reports. It
// belongs to one client, not to the options value the client was built
// with: an apiserver builds its main and its events client from the same
// options, and their revisions must not mix.
type guard struct {
	maxRev         atomic.Int64 // highest response revision seen
	stale          atomic.Int64 // serializable reads answered below the floor
	retryElsewhere atomic.Int64 // re-issued to another member
	retryLeader    atomic.Int64 // re-issued to the leader
	retryLinear    atomic.Int64 // re-issued as linearizable
	resets         atomic.Int64 // floor lowered: the cluster's revision went back
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
	rt.expireBehind()
	err := rt.serialRead(ctx, method, rr, reply, cc, invoker, opts)
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
// chunked Range). Its revision arrives with the last chunk, so a
// serializable one is held until then: the chunks of an answer below the
// floor are dropped and the read is re-issued as a unary one would be (on
// another member, on the leader, as a linearizable read), and the caller
// gets the chunks of the first answer at or above the floor. That costs
// the client the memory of the whole answer, as a Range does; the members
// still send it in chunks. Linearizable ones pass through, and only feed
// the floor.
type guardedRangeStream struct {
	grpc.ClientStream                 // the current attempt's
	ctx               context.Context // the call's, without a read mark
	rt                *router
	g                 *guard
	mark              *readMark // the first attempt's
	floor             int64
	pinned            bool
	desc              *grpc.StreamDesc
	cc                *grpc.ClientConn
	method            string
	streamer          grpc.Streamer
	opts              []grpc.CallOption

	req    *pb.RangeRequest // from SendMsg
	held   bool             // the answer has been received and checked
	chunks []any            // the answer, handed out one by one
	end    error            // what follows the last chunk: io.EOF or an error
}

func (s *guardedRangeStream) SendMsg(m any) error {
	if rr, ok := m.(*pb.RangeRequest); ok {
		s.req = rr
	}
	return s.ClientStream.SendMsg(m)
}

func (s *guardedRangeStream) RecvMsg(m any) error {
	if s.req == nil || !s.req.Serializable || s.pinned {
		if err := s.ClientStream.RecvMsg(m); err != nil {
			return err
		}
		if c, ok := m.(rangeStreamResponse); ok && s.req != nil && !s.req.Serializable {
			if rev := c.GetRangeResponse().GetHeader().GetRevision(); rev != 0 {
				s.g.linearizable(rev, s.floor)
			}
		} else if ok {
			s.g.observe(c.GetRangeResponse().GetHeader().GetRevision())
		}
		return nil
	}
	if !s.held {
		s.held = true
		s.chunks, s.end = s.answer(m)
	}
	if len(s.chunks) == 0 {
		return s.end
	}
	// Move the held chunk into the caller's message: a shallow move of a
	// message nothing else refers to (the generated types cannot be named
	// here, 3.6's API lacks them).
	reflect.ValueOf(m).Elem().Set(reflect.ValueOf(s.chunks[0]).Elem())
	s.chunks[0] = nil
	s.chunks = s.chunks[1:]
	return nil
}

// answer receives the whole answer of the current attempt and re-issues
// the read while it is below the floor; like m, each chunk is a new
// message of the caller's type.
func (s *guardedRangeStream) answer(like any) ([]any, error) {
	chunks, rev, err := s.collect(like)
	if err != nil || rev >= s.floor {
		s.g.observe(rev)
		return chunks, orEOF(err)
	}
	s.g.stale.Add(1)
	v := s.rt.view.Load()
	if v != nil {
		v.markBehind(s.mark.addr, s.floor)
		for _, leader := range [...]bool{false, true} {
			if leader {
				if !v.leaderKnown() {
					break
				}
				s.g.retryLeader.Add(1)
			} else {
				s.g.retryElsewhere.Add(1)
			}
			mark := &readMark{serial: true, ranged: true, leader: leader}
			if err := s.reopen(context.WithValue(s.ctx, readKey{}, mark)); err != nil {
				continue
			}
			chunks, rev, err := s.collect(like)
			if s.ctx.Err() != nil {
				return nil, s.ctx.Err()
			}
			if err == nil && rev >= s.floor {
				s.g.observe(rev)
				return chunks, io.EOF
			}
			if err == nil {
				v.markBehind(mark.addr, s.floor)
			}
		}
	}
	s.g.retryLinear.Add(1)
	s.req.Serializable = false
	err = s.reopen(context.WithValue(s.ctx, readKey{}, &readMark{ranged: true}))
	s.req.Serializable = true
	if err != nil {
		return nil, err
	}
	chunks, rev, err = s.collect(like)
	if err == nil {
		s.g.linearizable(rev, s.floor)
	}
	return chunks, orEOF(err)
}

// reopen starts another attempt of the read on a new stream.
func (s *guardedRangeStream) reopen(ctx context.Context) error {
	cs, err := s.streamer(ctx, s.desc, s.cc, s.method, s.opts...)
	if err != nil {
		return err
	}
	s.ClientStream = cs
	if err := cs.SendMsg(s.req); err != nil {
		return err
	}
	return cs.CloseSend()
}

// collect receives the current attempt's chunks up to the end of its
// stream, and the revision the last one carries.
func (s *guardedRangeStream) collect(like any) (chunks []any, rev int64, err error) {
	t := reflect.TypeOf(like).Elem()
	for {
		m := reflect.New(t).Interface()
		if err := s.ClientStream.RecvMsg(m); err != nil {
			if err == io.EOF {
				return chunks, rev, nil
			}
			return chunks, rev, err
		}
		if c, ok := m.(rangeStreamResponse); ok {
			if r := c.GetRangeResponse().GetHeader().GetRevision(); r != 0 {
				rev = r
			}
		}
		chunks = append(chunks, m)
	}
}

func orEOF(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

// streamInterceptor checks WithMember pins, marks streams whose method
// Classify does not know, so that the picker counts them as streams and
// not as requests in flight, and guards RangeStreams.
func (h *handle) streamInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	var e *entry
	if h.e != nil {
		e = h.e.forConn(cc)
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
	_, pinned := pinnedMember(ctx)
	s := &guardedRangeStream{
		ctx: ctx, rt: e.rt, g: &e.guard, mark: &readMark{}, floor: e.guard.maxRev.Load(), pinned: pinned,
		desc: desc, cc: cc, method: method, streamer: streamer, opts: opts,
	}
	e.rt.expireBehind()
	cs, err := streamer(context.WithValue(ctx, readKey{}, s.mark), desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	s.ClientStream = cs
	return s, nil
}
