package etcdbalance

import (
	"context"
	"io"
	"reflect"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
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

// reissue gets an answer at or above floor for a serializable read that a
// member answered below it (answered: the peerAddr of its connection):
// first from another member (that one is tagged behind, so no guarded read
// goes there until a probe shows it has caught up), then from the leader,
// then as a linearizable read, which cannot be below floor in the same
// cluster. ctx is the call's context without the first attempt's read
// mark; ranged tells a List. Steps that need the cluster view v are
// skipped without one. Each attempt is decoded into resp (grpc resets it
// first), so the caller gets the last answer.
func (g *guard) reissue(ctx context.Context, v *view, answered string, method string, req *pb.RangeRequest, resp *pb.RangeResponse, ranged bool, floor int64, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) error {
	g.stale.Add(1)
	if v != nil {
		v.markBehind(v.memberAt(answered), floor)
		for _, leader := range [...]bool{false, true} {
			if leader {
				if !v.leaderKnown() {
					break
				}
				g.retryLeader.Add(1)
			} else {
				g.retryElsewhere.Add(1)
			}
			mark := &readMark{serial: true, ranged: ranged, leader: leader}
			var p peer.Peer
			err := invoker(context.WithValue(ctx, readKey{}, mark), method, req, resp, cc, withPeer(opts, &p)...)
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
			v.markBehind(v.memberAt(peerAddr(&p)), floor)
		}
	}
	g.retryLinear.Add(1)
	// The request is this call's own (clientv3 builds one per call), and
	// the retry interceptor reuses it only after this returns.
	req.Serializable = false
	lctx := ctx
	if ranged {
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
	e                 *entry
	g                 *guard
	peer              *peer.Peer // the current attempt's, known once it has ended
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
	v := s.e.view.Load()
	if v != nil {
		v.markBehind(v.memberAt(peerAddr(s.peer)), s.floor)
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
				v.markBehind(v.memberAt(peerAddr(s.peer)), s.floor)
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
	s.peer = new(peer.Peer)
	cs, err := s.streamer(ctx, s.desc, s.cc, s.method, withPeer(s.opts, s.peer)...)
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
