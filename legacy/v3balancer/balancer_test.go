package v3balancer

import (
	"errors"
	"testing"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
	"go.uber.org/goleak"
	"golang.org/x/net/context"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var eps = []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"}

func upAll(b *Balancer) {
	for _, a := range b.addrs {
		b.Up(a)
	}
}

func mustGet(t *testing.T, b *Balancer, ctx context.Context) (string, func()) {
	t.Helper()
	a, put, err := b.Get(ctx, grpc.BalancerGetOptions{BlockingWait: true})
	if err != nil {
		t.Fatal(err)
	}
	return a.Addr, put
}

func TestFailFastWithNothingUp(t *testing.T) {
	b := New(eps, "", nil)
	defer b.Close()
	if got := <-b.Notify(); len(got) != 3 || got[0].Addr != "10.0.0.1:2379" {
		t.Fatalf("Notify = %v, want the three hosts", got)
	}
	_, _, err := b.Get(context.Background(), grpc.BalancerGetOptions{})
	if grpc.Code(err) != codes.Unavailable {
		t.Fatalf("fail-fast Get with nothing up: %v, want Unavailable", err)
	}
}

func TestBlockingGetWaitsForUpAndClose(t *testing.T) {
	b := New(eps, "", nil)
	got := make(chan string)
	go func() {
		a, put, err := b.Get(context.Background(), grpc.BalancerGetOptions{BlockingWait: true})
		if err == nil {
			put()
		}
		got <- a.Addr
	}()
	down := b.Up(grpc.Address{Addr: "10.0.0.2:2379"})
	if a := <-got; a != "10.0.0.2:2379" {
		t.Fatalf("Get = %q, want the only member up", a)
	}
	down(errors.New("gone"))
	errc := make(chan error)
	go func() {
		_, _, err := b.Get(context.Background(), grpc.BalancerGetOptions{BlockingWait: true})
		errc <- err
	}()
	b.Close()
	if err := <-errc; err != grpc.ErrClientConnClosing {
		t.Fatalf("Get blocked across Close: %v, want ErrClientConnClosing", err)
	}
	b.Close() // twice is fine
}

func TestEnginesShared(t *testing.T) {
	a := New(eps, "k", nil)
	b := New([]string{eps[2], eps[0], eps[1]}, "k", nil)
	c := New(eps, "other", nil)
	if a.eng != b.eng {
		t.Error("same endpoints in another order and the same TLS key: want one engine")
	}
	if a.eng == c.eng {
		t.Error("another TLS key: want another engine")
	}
	upAll(a)
	upAll(b)
	// A call in flight on one client counts for the other's choices.
	_, put := mustGet(t, a, context.Background())
	var inflight int64
	for _, s := range b.eng.p.Snapshot() {
		inflight += s.InFlight
	}
	put()
	if inflight != 1 {
		t.Errorf("in flight seen through the shared engine = %d, want 1", inflight)
	}
	a.Close()
	b.Close()
	c.Close()
	engines.Lock()
	n := len(engines.m)
	engines.Unlock()
	if n != 0 {
		t.Errorf("%d engines left after every Balancer closed", n)
	}
}

func TestTLSKey(t *testing.T) {
	if TLSKey(nil) != "" {
		t.Error("TLSKey(nil) != \"\"")
	}
}

// call runs one unary call of method through UnaryInterceptor, with an
// invoker that does what grpc v1.0.4 does: Get, then put when the
// transport is done, 5ms later. It returns the member picked.
func call(t *testing.T, b *Balancer, method string, req interface{}, callErr error) string {
	t.Helper()
	var addr string
	invoker := func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		a, put, err := b.Get(ctx, grpc.BalancerGetOptions{BlockingWait: true})
		if err != nil {
			return err
		}
		addr = a.Addr
		// Every member answers in 5ms: the latency samples are that, not
		// the microseconds of noise a direct call takes, which the reserve
		// rule would take for real differences between members.
		if r := recordFrom(ctx); r != nil {
			r.start = r.start.Add(-5 * time.Millisecond)
		}
		put()
		return callErr
	}
	err := UnaryInterceptor(nil)(context.Background(), method, req, nil, nil, invoker)
	if err != callErr {
		t.Fatalf("interceptor returned %v, want %v", err, callErr)
	}
	return addr
}

type rangeRequest struct{ Serializable bool }

func TestRouting(t *testing.T) {
	b := New(eps, "", nil)
	defer b.Close()
	upAll(b)
	leader, lagging := "10.0.0.1:2379", "10.0.0.3:2379"
	b.eng.p.UpdateTags(leader, tagLeader, 0)
	b.eng.p.UpdateTags(lagging, tagLagging, 0)
	// Reads hold the leader in reserve: with idle followers it gets only
	// the reserve rule's probes, at most once a second and in at most 1 of
	// 2n picks. A bound of reads/(2n) allows them whatever the speed of
	// the machine, and still fails if the leader took a real share (1/n).
	const reads = 150
	leaderReads := 0
	for i := 0; i < reads; i++ {
		if a := call(t, b, "/etcdserverpb.KV/Put", nil, nil); a != leader {
			t.Fatalf("write went to %s, want the leader %s", a, leader)
		}
		switch a := call(t, b, "/etcdserverpb.KV/Range", &rangeRequest{Serializable: true}, nil); a {
		case leader:
			leaderReads++
		case lagging:
			t.Fatalf("serializable read went to the lagging member %s", a)
		}
		if a := call(t, b, "/etcdserverpb.KV/Range", &rangeRequest{}, nil); a == leader {
			leaderReads++
		}
	}
	if max := 2 * reads / (2 * len(eps)); leaderReads > max {
		t.Errorf("the leader served %d of %d reads with idle followers, want at most %d (probes)", leaderReads, 2*reads, max)
	}
	// Every follower lagging: serializable reads go to one anyway, and
	// never to a member that is not up.
	b.eng.p.UpdateTags("10.0.0.2:2379", tagLagging, 0)
	if a := call(t, b, "/etcdserverpb.KV/Range", &rangeRequest{Serializable: true}, nil); a == "" {
		t.Fatal("serializable read found no member when every follower lags")
	}
	for _, s := range b.eng.p.Snapshot() {
		if s.InFlight != 0 {
			t.Errorf("%s: %d in flight after every call returned", s.Addr, s.InFlight)
		}
	}
}

func TestFailuresReachTheEngine(t *testing.T) {
	b := New(eps[:2], "", nil)
	defer b.Close()
	upAll(b)
	unavailable := grpc.Errorf(codes.Unavailable, "member gone")
	notFound := grpc.Errorf(codes.NotFound, "an answer")
	for i := 0; i < 4; i++ {
		call(t, b, "/etcdserverpb.KV/Range", nil, unavailable)
		call(t, b, "/etcdserverpb.KV/Range", nil, notFound)
	}
	var failures int64
	for _, s := range b.eng.p.Snapshot() {
		failures += s.Failures
	}
	if failures != 4 {
		t.Errorf("engine counted %d failures, want 4 (application errors are answers)", failures)
	}
}

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		method string
		req    interface{}
		want   kind
	}{
		{"/etcdserverpb.KV/Range", &rangeRequest{Serializable: true}, kindSerializable},
		{"/etcdserverpb.KV/Range", rangeRequest{}, kindRead},
		{"/etcdserverpb.KV/Range", nil, kindRead},
		{"/etcdserverpb.KV/Txn", nil, kindWrite},
		{"/etcdserverpb.Lease/LeaseGrant", nil, kindWrite},
		{"/etcdserverpb.Maintenance/Status", nil, kindOther},
	} {
		if got := classify(tt.method, tt.req); got != tt.want {
			t.Errorf("classify(%s, %#v) = %d, want %d", tt.method, tt.req, got, tt.want)
		}
	}
	if result(context.Background(), nil) != picker.OK {
		t.Error("nil error is not OK")
	}
}
