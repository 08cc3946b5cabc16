package etcdbalance

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		require.NoError(t, h.unaryInterceptor(ctx, mRange, req, reply, nil, scripted(t, script, &got)))
		assert.True(t, req.Serializable, "the caller's request was changed")
		return reply.Header.Revision, got
	}
	ctx := context.Background()

	h, v := guardFixture(t, defaultRouting())
	rev, got := read(h, ctx, []answer{{"b", 90}, {"c", 95}, {"a", 99}, {"", 100}})
	assert.Equal(t, int64(100), rev, "answers 90, 95, 99, 100")
	assert.Equal(t, []attempt{{true, true, false}, {true, true, false}, {true, true, true}, {false, false, false}}, got,
		"elsewhere, on the leader, then linearizable")
	g := &h.e.guard
	assert.Equal(t, []int64{1, 1, 1, 1}, []int64{g.stale.Load(), g.retryElsewhere.Load(), g.retryLeader.Load(), g.retryLinear.Load()},
		"stale, retried elsewhere, on the leader, linearizable")
	for _, a := range []string{"a", "b", "c"} {
		assert.Equal(t, int64(100), v.members[a].needRev, "%s held out of guarded reads", a)
	}

	h, _ = guardFixture(t, defaultRouting())
	rev, got = read(h, ctx, []answer{{"b", 90}, {"c", 101}})
	assert.Equal(t, int64(101), rev, "answers 90, 101")
	assert.Len(t, got, 2)
	assert.Equal(t, int64(101), h.e.guard.maxRev.Load(), "highest revision seen")
	rev, got = read(h, ctx, []answer{{"b", 150}})
	assert.Equal(t, int64(150), rev)
	assert.Len(t, got, 1)
	// Pinned to a member: its answer, whatever it is.
	rev, got = read(h, WithMember(ctx, "b"), []answer{{"b", 10}})
	assert.Equal(t, int64(10), rev, "pinned: the member's answer")
	assert.Len(t, got, 1)

	// A member known by host name answers from its IP address: the view's
	// probes mapped one to the other, and that member is held out.
	h, v = guardFixture(t, defaultRouting())
	v.peers = map[string]string{"10.0.0.2:2379": "b"}
	rev, got = read(h, ctx, []answer{{"10.0.0.2:2379", 90}, {"c", 100}})
	assert.Equal(t, int64(100), rev, "answers 90 from b's address, 100")
	assert.Len(t, got, 2)
	assert.Equal(t, int64(100), v.members["b"].needRev, "b held")
	assert.Zero(t, v.members["c"].needRev, "c not held")

	// Without a view: straight to a linearizable read.
	h, _ = guardFixture(t, defaultRouting())
	h.e.view.Store(nil)
	rev, got = read(h, ctx, []answer{{"b", 90}, {"", 100}})
	assert.Equal(t, int64(100), rev, "no view")
	if assert.Len(t, got, 2) {
		assert.False(t, got[1].serializable, "no view: a linearizable retry")
	}

	// Guard off: the stale answer stands.
	set := defaultRouting()
	set.monotonic = false
	h, _ = guardFixture(t, set)
	rev, got = read(h, ctx, []answer{{"b", 90}})
	assert.Equal(t, int64(90), rev, "guard off: the stale answer")
	assert.Len(t, got, 1)
}
