package etcdbalance

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
)

// answer is one scripted attempt: the remote address of the connection
// that serves it and the revision it answers with.
type answer struct {
	addr string
	rev  int64
}

// tcpAddr is a net.Addr of a TCP peer.
type tcpAddr string

func (tcpAddr) Network() string  { return "tcp" }
func (a tcpAddr) String() string { return string(a) }

// attempt records what the interceptor asked for in one invocation.
type attempt struct {
	serializable, marked, leader bool
}

// scripted returns an invoker that answers Ranges from script, in order,
// filling the grpc.Peer option as grpc would, and records each attempt.
func scripted(t *testing.T, script []answer, got *[]attempt) grpc.UnaryInvoker {
	return func(ctx context.Context, method string, req, reply any, _ *grpc.ClientConn, opts ...grpc.CallOption) error {
		if len(*got) == len(script) {
			t.Fatalf("attempt %d, script has %d", len(*got)+1, len(script))
		}
		a := script[len(*got)]
		m := readMarkOf(ctx)
		*got = append(*got, attempt{serializable: req.(*pb.RangeRequest).Serializable, marked: m != nil, leader: m != nil && m.leader})
		for _, o := range opts {
			if p, ok := o.(grpc.PeerCallOption); ok && a.addr != "" {
				*p.PeerAddr = peer.Peer{Addr: tcpAddr(a.addr)}
			}
		}
		reply.(*pb.RangeResponse).Header = &pb.ResponseHeader{Revision: a.rev}
		return nil
	}
}

// guardFixture is a handle whose router has a view of a (leader), b, c.
func guardFixture(t *testing.T, set routing) (*handle, *view) {
	p := routedPicker(t, set)
	v := &view{rt: p.rt, engine: p.engine, interval: time.Second, leader: "a", members: map[string]*memberState{}}
	for _, a := range []string{"a", "b", "c", "d"} {
		v.members[a] = &memberState{verified: true}
	}
	h := &handle{e: &entry{engine: p.engine, rt: p.rt}}
	h.e.view.Store(v)
	h.e.guard.observe(100)
	return h, v
}

// TestGuardReissue: a serializable read answered below the revision seen
// is re-issued on another member, then on the leader, then as a
// linearizable read; the members that answered low are held out.
func TestGuardReissue(t *testing.T) {
	read := func(h *handle, ctx context.Context, script []answer) (int64, []attempt) {
		t.Helper()
		var got []attempt
		reply := &pb.RangeResponse{}
		req := &pb.RangeRequest{Key: []byte("k"), Serializable: true}
		if err := h.unaryInterceptor(ctx, mRange, req, reply, nil, scripted(t, script, &got)); err != nil {
			t.Fatal(err)
		}
		if !req.Serializable {
			t.Error("the caller's request was changed")
		}
		return reply.Header.Revision, got
	}
	ctx := context.Background()

	h, v := guardFixture(t, defaultRouting())
	rev, got := read(h, ctx, []answer{{"b", 90}, {"c", 95}, {"a", 99}, {"", 100}})
	want := []attempt{{true, true, false}, {true, true, false}, {true, true, true}, {false, false, false}}
	if rev != 100 || len(got) != 4 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Errorf("answers 90, 95, 99, 100: got revision %d after %+v, want 100 after %+v", rev, got, want)
	}
	if g := (GuardStats{Stale: h.e.guard.stale.Load(), RetriedElsewhere: h.e.guard.retryElsewhere.Load(), RetriedOnLeader: h.e.guard.retryLeader.Load(), RetriedLinearizable: h.e.guard.retryLinear.Load()}); g.Stale != 1 || g.RetriedElsewhere != 1 || g.RetriedOnLeader != 1 || g.RetriedLinearizable != 1 {
		t.Errorf("counters %+v", g)
	}
	for _, a := range []string{"a", "b", "c"} {
		if v.members[a].needRev != 100 {
			t.Errorf("%s: needRev %d, want 100 (held out of guarded reads)", a, v.members[a].needRev)
		}
	}

	h, _ = guardFixture(t, defaultRouting())
	if rev, got := read(h, ctx, []answer{{"b", 90}, {"c", 101}}); rev != 101 || len(got) != 2 {
		t.Errorf("answers 90, 101: got %d after %+v, want 101 after 2 attempts", rev, got)
	}
	if h.e.guard.maxRev.Load() != 101 {
		t.Errorf("highest revision seen %d, want 101", h.e.guard.maxRev.Load())
	}
	if rev, got := read(h, ctx, []answer{{"b", 150}}); rev != 150 || len(got) != 1 {
		t.Errorf("answer 150: got %d after %+v", rev, got)
	}
	// Pinned to a member: its answer, whatever it is.
	if rev, got := read(h, WithMember(ctx, "b"), []answer{{"b", 10}}); rev != 10 || len(got) != 1 {
		t.Errorf("pinned: got %d after %+v, want the member's 10", rev, got)
	}

	// A member known by host name answers from its IP address: the view's
	// probes mapped one to the other, and that member is held out.
	h, v = guardFixture(t, defaultRouting())
	v.peers = map[string]string{"10.0.0.2:2379": "b"}
	if rev, got := read(h, ctx, []answer{{"10.0.0.2:2379", 90}, {"c", 100}}); rev != 100 || len(got) != 2 {
		t.Errorf("answers 90 from b's address, 100: got %d after %+v", rev, got)
	}
	if v.members["b"].needRev != 100 || v.members["c"].needRev != 0 {
		t.Errorf("needRev b %d, c %d; want b held (100), c not (0)", v.members["b"].needRev, v.members["c"].needRev)
	}

	// Without a view: straight to a linearizable read.
	h, _ = guardFixture(t, defaultRouting())
	h.e.view.Store(nil)
	if rev, got := read(h, ctx, []answer{{"b", 90}, {"", 100}}); rev != 100 || len(got) != 2 || got[1].serializable {
		t.Errorf("no view: got %d after %+v, want a linearizable retry", rev, got)
	}

	// Guard off: the stale answer stands.
	set := defaultRouting()
	set.monotonic = false
	h, _ = guardFixture(t, set)
	if rev, got := read(h, ctx, []answer{{"b", 90}}); rev != 90 || len(got) != 1 {
		t.Errorf("guard off: got %d after %+v, want the stale 90", rev, got)
	}
}
