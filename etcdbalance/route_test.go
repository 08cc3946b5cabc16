package etcdbalance

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/balancer"

	"github.com/etcdbalance/etcdbalance-go/picker"
	"github.com/stretchr/testify/assert"
)

const (
	mRange      = "/etcdserverpb.KV/Range"
	mPut        = "/etcdserverpb.KV/Put"
	mWatch      = "/etcdserverpb.Watch/Watch"
	mMemberList = "/etcdserverpb.Cluster/MemberList"
)

// routedPicker is a grpcPicker over a (leader), b and c (followers) and d
// (a learner), all READY, with the routing rules of set and a view that
// has settled. The policy is least-outstanding: with one call at a time,
// every member ties and the choice is uniform among the eligible ones,
// whatever the nanosecond latencies of a fake call.
func routedPicker(t *testing.T, set routing) *grpcPicker {
	t.Helper()
	// A clock that stands still: every call takes no time, so the latency
	// estimates are equal and only the rules tell the members apart.
	return routedPickerAt(t, set, stoppedClock{})
}

// routedPickerAt is routedPicker on clk, which only the test moves.
func routedPickerAt(t *testing.T, set routing, clk picker.Clock) *grpcPicker {
	t.Helper()
	p, _ := testPickerWith(t, picker.Config{Policy: picker.LeastOutstanding, Clock: clk}, []string{"a", "b", "c", "d"}, "a", "b", "c", "d")
	p.rt = newRouter(set, p.engine)
	p.rt.viewOn.Store(true)
	p.rt.settled.Store(true)
	tag(t, p, "a", tagLeader)
	tag(t, p, "d", tagLearner)
	return p
}

// stoppedClock is a picker.Clock whose time never moves.
type stoppedClock struct{}

func (stoppedClock) Now() time.Time { return time.Unix(1e9, 0) }

// manualClock is a picker.Clock that moves only when the test says.
type manualClock struct{ t atomic.Int64 }

func (c *manualClock) Now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *manualClock) advance(d time.Duration) { c.t.Add(int64(d)) }

// tag replaces the view tags of addr.
func tag(t *testing.T, p *grpcPicker, addr string, tags picker.Tags) {
	t.Helper()
	if err := p.engine.UpdateTags(addr, tags, viewTags&^tags); err != nil {
		t.Fatal(err)
	}
}

// serial returns a context marked as the unary interceptor marks a
// serializable Range.
func serial(ctx context.Context) context.Context {
	return context.WithValue(ctx, readKey{}, &readMark{serial: true})
}

// route makes n picks of method with ctx, one at a time, and returns how
// many went to each member; a pick that must wait counts under "wait".
func route(t *testing.T, p *grpcPicker, method string, ctx context.Context, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		res, err := p.Pick(balancer.PickInfo{FullMethodName: method, Ctx: ctx})
		if err == balancer.ErrNoSubConnAvailable {
			got["wait"]++
			continue
		}
		if err != nil {
			t.Fatalf("Pick(%s): %v", method, err)
		}
		var addr string
		for _, s := range p.engine.Snapshot() {
			if s.InFlight+s.Streams > 0 {
				addr = s.Addr
			}
		}
		got[addr]++
		res.Done(balancer.DoneInfo{BytesSent: true, BytesReceived: true})
	}
	return got
}

// only reports whether got has picks on exactly the members in want.
func only(got map[string]int, want ...string) bool {
	n := 0
	for _, w := range want {
		if got[w] == 0 {
			return false
		}
		n += got[w]
	}
	total := 0
	for _, v := range got {
		total += v
	}
	return n == total
}

// TestRoutingRules checks the table in the package doc, one rule at a
// time, on a picker whose tags are set by hand (no cluster).
func TestRoutingRules(t *testing.T) {
	ctx := context.Background()
	const n = 300
	check := func(name string, got map[string]int, want ...string) {
		t.Helper()
		if !only(got, want...) {
			t.Errorf("%s: picks %v, want every one of %v and nothing else", name, got, want)
		}
	}

	p := routedPicker(t, defaultRouting())
	check("writes", route(t, p, mPut, ctx, n), "a")
	check("linearizable reads", route(t, p, mRange, ctx, n), "b", "c")
	check("serializable reads", route(t, p, mRange, serial(ctx), n), "b", "c", "d")
	check("watches", route(t, p, mWatch, ctx, n), "a", "b", "c")
	check("member list", route(t, p, mMemberList, ctx, n), "a", "b", "c")
	check("status", route(t, p, methodStatus, ctx, n), "a", "b", "c", "d")
	check("snapshot", route(t, p, methodSnapshot, ctx, n), "a", "b", "c")
	// Lists (a Range with a range_end, a RangeStream) share the leader by
	// cost: only single-key reads hold it in reserve.
	check("range stream", route(t, p, methodRangeStream, ctx, n), "a", "b", "c")
	check("lists", route(t, p, mRange, context.WithValue(ctx, readKey{}, &readMark{ranged: true}), n), "a", "b", "c")
	check("WithLeader reads", route(t, p, mRange, WithLeader(serial(ctx)), n), "a")
	check("WithAnyMember linearizable reads", route(t, p, mRange, WithAnyMember(ctx), n), "a", "b", "c")
	check("WithAnyMember writes", route(t, p, mPut, WithAnyMember(ctx), n), "a", "b", "c")

	// Lagging and behind members get no serializable reads, but other
	// calls; WithAnyMember ignores both.
	tag(t, p, "b", tagLagging)
	tag(t, p, "d", tagLearner|tagBehind)
	check("serializable reads, b lagging, d behind", route(t, p, mRange, serial(ctx), n), "c")
	check("linearizable reads, b lagging", route(t, p, mRange, ctx, n), "b", "c")
	check("snapshot, b lagging", route(t, p, methodSnapshot, ctx, n), "a", "c")
	check("range stream, b lagging", route(t, p, methodRangeStream, ctx, n), "a", "c")
	check("WithAnyMember serializable reads", route(t, p, mRange, WithAnyMember(serial(ctx)), n), "a", "b", "c", "d")
	tag(t, p, "c", tagLagging)
	check("serializable reads, every follower stale", route(t, p, mRange, serial(ctx), n), "a")
	tag(t, p, "a", tagLeader|tagLagging)
	check("serializable reads, everyone stale", route(t, p, mRange, serial(ctx), n), "b", "c", "d")
	tag(t, p, "a", tagLeader)
	tag(t, p, "b", 0)
	tag(t, p, "c", 0)
	tag(t, p, "d", tagLearner)

	// The leader down: writes go to a follower, never to the learner.
	_ = p.engine.UpdateTags("a", tagDown, 0)
	check("writes, leader down", route(t, p, mPut, ctx, n), "b", "c")
	check("WithLeader, leader down", route(t, p, mRange, WithLeader(ctx), n), "b", "c")
	// Only the learner up: writes wait for a voter rather than fail on it.
	_ = p.engine.UpdateTags("b", tagDown, 0)
	_ = p.engine.UpdateTags("c", tagDown, 0)
	check("writes, only the learner up", route(t, p, mPut, ctx, n), "wait")
	check("serializable reads, only the learner up", route(t, p, mRange, serial(ctx), n), "d")
	_ = p.engine.UpdateTags("a", 0, tagDown)
	_ = p.engine.UpdateTags("b", 0, tagDown)
	_ = p.engine.UpdateTags("c", 0, tagDown)

	// Only learners in the set: no member may ever serve a write, so it
	// goes to a learner, which refuses it with etcd's own error at once, as
	// with the stock client; a serializable read is served.
	p, _ = testPickerWith(t, picker.Config{Policy: picker.LeastOutstanding}, []string{"d"}, "d")
	p.rt = newRouter(defaultRouting(), p.engine)
	p.rt.viewOn.Store(true)
	p.rt.settled.Store(true)
	tag(t, p, "d", tagLearner)
	check("writes, only learners", route(t, p, mPut, ctx, n), "d")
	check("watches, only learners", route(t, p, mWatch, ctx, n), "d")
	check("serializable reads, only learners", route(t, p, mRange, serial(ctx), n), "d")
	// Before the first round is over, its role is not known: wait.
	tag(t, p, "d", tagUnverified)
	p.rt.settled.Store(false)
	check("writes, role unknown", route(t, p, mPut, ctx, n), "wait")
	check("serializable reads, role unknown", route(t, p, mRange, serial(ctx), n), "d")

	// Every rule switched off.
	set := defaultRouting()
	set.leaderWrites, set.followerReads, set.learnerReads = false, false, false
	p = routedPicker(t, set)
	check("writes, leader writes off", route(t, p, mPut, ctx, n), "a", "b", "c")
	check("reads, follower reads off", route(t, p, mRange, ctx, n), "a", "b", "c")
	check("serializable reads, learner reads off", route(t, p, mRange, serial(ctx), n), "a", "b", "c")
	set = defaultRouting()
	set.lagThreshold, set.monotonic = 0, false
	p = routedPicker(t, set)
	tag(t, p, "b", tagLagging|tagBehind)
	check("serializable reads, lag and guard off", route(t, p, mRange, serial(ctx), n), "b", "c", "d")

	// Without a router (an engine of the balancer's own): load alone.
	p, _ = testPickerWith(t, picker.Config{Policy: picker.LeastOutstanding}, []string{"a", "b", "c"}, "a", "b", "c")
	_ = p.engine.UpdateTags("a", tagLeader, 0)
	check("no router", route(t, p, mRange, ctx, n), "a", "b", "c")
}

// TestRoutingWaitsForTheView: while the view runs but no member is known
// to be a voter, calls that a learner refuses wait for it; calls that a
// learner serves do not. Once the view settles, they go.
func TestRoutingWaitsForTheView(t *testing.T) {
	ctx := context.Background()
	p := routedPicker(t, defaultRouting())
	for _, a := range []string{"a", "b", "c", "d"} {
		tag(t, p, a, tagUnverified)
	}
	p.rt.settled.Store(false)
	if got := route(t, p, mPut, ctx, 10); got["wait"] != 10 {
		t.Errorf("writes before any member is verified: %v, want all to wait", got)
	}
	if got := route(t, p, mRange, serial(ctx), 50); got["wait"] != 0 {
		t.Errorf("serializable reads before any member is verified: %v, want none to wait", got)
	}
	if got := route(t, p, methodStatus, ctx, 50); got["wait"] != 0 {
		t.Errorf("Status before any member is verified: %v, want none to wait", got)
	}
	// One voter verified: writes go there.
	tag(t, p, "b", 0)
	if got := route(t, p, mPut, ctx, 50); !only(got, "b") {
		t.Errorf("writes with only b verified: %v, want all on b", got)
	}
	// Settled with nothing verified (every probe failed): fail open.
	tag(t, p, "b", tagUnverified)
	p.rt.settled.Store(true)
	if got := route(t, p, mPut, ctx, 200); got["wait"] != 0 || len(got) < 3 {
		t.Errorf("writes after the first round found nothing: %v, want them spread", got)
	}
}

// TestBehindHold: a member that answers below the floor is held out of
// guarded reads for behindHold, then tried again; held longer if still
// behind; and released at once by a probe that shows it caught up.
func TestBehindHold(t *testing.T) {
	clk := &manualClock{}
	clk.t.Store(1e18)
	p := routedPickerAt(t, defaultRouting(), clk)
	v := &view{rt: p.rt, engine: p.engine, interval: time.Second, members: map[string]*memberState{}}
	for _, a := range []string{"a", "b", "c", "d"} {
		v.members[a] = &memberState{verified: true}
	}
	behind := func() bool {
		for _, s := range p.engine.Snapshot() {
			if s.Addr == "b" {
				return s.Tags&tagBehind != 0
			}
		}
		return false
	}
	v.markBehind("b", 100)
	if !behind() || v.members["b"].hold != behindHold {
		t.Fatalf("after a stale answer: behind %v, hold %v", behind(), v.members["b"].hold)
	}
	clk.advance(behindHold - 1)
	if !behind() {
		t.Fatal("the hold ended early")
	}
	clk.advance(1)
	if behind() {
		t.Fatal("the hold did not end")
	}
	v.markBehind("b", 120)
	if h := v.members["b"].hold; h != 2*behindHold {
		t.Errorf("second hold %v, want %v", h, 2*behindHold)
	}
	for range 10 {
		clk.advance(time.Hour)
		v.markBehind("b", 130)
	}
	if h := v.members["b"].hold; h != time.Second {
		t.Errorf("hold grew to %v, want the probe interval", h)
	}
	// A round without b's answer changes nothing; one that shows b at 130
	// releases it, and its next hold starts short again.
	v.apply(p.engine.Snapshot(), nil)
	if !behind() {
		t.Fatal("a round without answers released b")
	}
	ok := &pb.StatusResponse{Header: &pb.ResponseHeader{MemberId: 2, Revision: 130}, RaftTerm: 2, Leader: 1}
	v.apply(p.engine.Snapshot(), []probeResult{{addr: "b", resp: ok}})
	if behind() || v.members["b"].hold != 0 {
		t.Fatalf("caught up: behind %v, hold %v", behind(), v.members["b"].hold)
	}
}

// TestRoutedPickAllocs: routing adds no allocation to a pick.
func TestRoutedPickAllocs(t *testing.T) {
	p := routedPicker(t, defaultRouting())
	ctx, cancel := context.WithTimeout(serial(context.Background()), time.Hour)
	defer cancel()
	for _, method := range []string{mRange, mPut} {
		if n := pickAllocs(t, p, balancer.PickInfo{FullMethodName: method, Ctx: ctx}); n != 0 {
			t.Errorf("%s: Pick+Done allocates %v times per call", method, n)
		}
	}
}

// TestCostClass: writes, Lists and the rest are judged by apart estimates.
func TestCostClass(t *testing.T) {
	cases := []struct {
		class  rpcClass
		method string
		mark   *readMark
		want   picker.Class
	}{
		{rpcWrite, mPut, nil, picker.ClassWrite},
		{rpcRead, mRange, nil, picker.ClassPoint},
		{rpcRead, mRange, &readMark{serial: true}, picker.ClassPoint},
		{rpcRead, mRange, &readMark{ranged: true}, picker.ClassRange},
		{rpcRead, methodRangeStream, nil, picker.ClassRange},
		{rpcOther, methodStatus, nil, picker.ClassPoint},
	}
	for _, c := range cases {
		if got := costClass(c.class, c.method, c.mark); got != c.want {
			t.Errorf("costClass(%v, %s, %+v) = %v, want %v", c.class, c.method, c.mark, got, c.want)
		}
	}
}

// TestRouterListen: kick calls the one listener; a newer listener (a
// rebuilt balancer) replaces the older, whose cancel leaves it alone.
func TestRouterListen(t *testing.T) {
	rt := newRouter(defaultRouting(), nil)
	rt.kick() // nobody listens
	var first, second int
	cancel1 := rt.listen(func() { first++ })
	rt.kick()
	cancel2 := rt.listen(func() { second++ })
	cancel1()
	rt.kick()
	cancel2()
	rt.kick()
	assert.Equal(t, 1, first)
	assert.Equal(t, 1, second)
}
