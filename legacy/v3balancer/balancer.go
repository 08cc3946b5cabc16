package v3balancer

import (
	"net/url"
	"strings"
	"sync"

	"github.com/etcdbalance/etcdbalance-go/picker"
	"golang.org/x/net/context"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// errNoAddr is what a fail-fast call gets while no member is up; clientv3
// 3.1.5 retries Unavailable once a connection comes up.
var errNoAddr = grpc.Errorf(codes.Unavailable, "v3balancer: no member is up")

// Balancer implements grpc v1.0.4's grpc.Balancer for one client
// connection. Its readiness view is its own (grpc's Up and down for this
// connection); its statistics live in an engine shared with every other
// Balancer of the same endpoints and TLS key.
type Balancer struct {
	eng    *engine
	addrs  []grpc.Address
	notify chan []grpc.Address

	mu     sync.Mutex
	up     map[string]bool
	upc    chan struct{} // closed while any address is up, and after Close
	conn   *grpc.ClientConn
	closed bool
}

// StatusFunc asks the member that ctx is pinned to for its status, over cc.
// The clientv3 hook supplies it, because the request and response types are
// etcd's generated ones, which this package does not import.
type StatusFunc func(ctx context.Context, cc *grpc.ClientConn) (Status, error)

// Status is what the engine needs from etcd's StatusResponse.
type Status struct {
	Member    uint64 // the answering member's ID (header member_id)
	Leader    uint64
	RaftTerm  uint64
	RaftIndex uint64
}

// New returns a Balancer over endpoints (URLs or host:port). Balancers with
// the same endpoints (in any order) and tlsKey share an engine; status, when
// not nil, lets the engine learn the leader and lagging members (the first
// Balancer's status serves the engine's lifetime).
func New(endpoints []string, tlsKey string, status StatusFunc) *Balancer {
	hosts := make([]string, 0, len(endpoints))
	addrs := make([]grpc.Address, 0, len(endpoints))
	seen := make(map[string]bool)
	for _, ep := range endpoints {
		h := host(ep)
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		hosts = append(hosts, h)
		addrs = append(addrs, grpc.Address{Addr: h})
	}
	b := &Balancer{
		addrs:  addrs,
		notify: make(chan []grpc.Address, 1),
		up:     make(map[string]bool),
		upc:    make(chan struct{}),
	}
	b.notify <- addrs
	b.eng = acquire(hosts, tlsKey, status, b)
	return b
}

// host strips the scheme, as clientv3 does: grpc dials host:port.
func host(ep string) string {
	if !strings.Contains(ep, "://") {
		return ep
	}
	u, err := url.Parse(ep)
	if err != nil {
		return ep
	}
	return u.Host
}

// Start implements grpc.Balancer. The engine is already running.
func (b *Balancer) Start(target string, config grpc.BalancerConfig) error { return nil }

// Notify implements grpc.Balancer: every endpoint, once, so that grpc
// connects to all of them.
func (b *Balancer) Notify() <-chan []grpc.Address { return b.notify }

// Up implements grpc.Balancer: addr's connection is ready.
func (b *Balancer) Up(addr grpc.Address) (down func(error)) {
	a := addr.Addr
	b.mu.Lock()
	if b.closed || b.up[a] {
		b.mu.Unlock()
		return func(error) {}
	}
	b.up[a] = true
	if len(b.up) == 1 {
		close(b.upc)
	}
	b.mu.Unlock()
	b.eng.addUp(a, 1)
	var once sync.Once
	return func(error) { once.Do(func() { b.down(a) }) }
}

func (b *Balancer) down(a string) {
	b.mu.Lock()
	if !b.up[a] { // Close already let go of it
		b.mu.Unlock()
		return
	}
	delete(b.up, a)
	if len(b.up) == 0 {
		b.upc = make(chan struct{})
	}
	b.mu.Unlock()
	b.eng.addUp(a, -1)
}

func (b *Balancer) isUp(a string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.up[a]
}

// setConn learns the client's connection from its first call, so that the
// engine can ask members for their status over it, and probes at once:
// writes reach the leader from the first calls on.
func (b *Balancer) setConn(cc *grpc.ClientConn) {
	b.mu.Lock()
	first := b.conn == nil && !b.closed
	if first {
		b.conn = cc
	}
	b.mu.Unlock()
	if first {
		select {
		case b.eng.kick <- struct{}{}:
		default:
		}
	}
}

// Get implements grpc.Balancer: it picks the member for one call. A fail-fast
// call (BlockingWait false) fails at once while nothing is up; others wait
// for a connection or their context.
func (b *Balancer) Get(ctx context.Context, opts grpc.BalancerGetOptions) (addr grpc.Address, put func(), err error) {
	for {
		b.mu.Lock()
		closed, n, upc := b.closed, len(b.up), b.upc
		b.mu.Unlock()
		if closed {
			return grpc.Address{}, nil, grpc.ErrClientConnClosing
		}
		if n > 0 {
			break
		}
		if !opts.BlockingWait {
			return grpc.Address{}, nil, errNoAddr
		}
		select {
		case <-upc:
		case <-ctx.Done():
			return grpc.Address{}, nil, ctx.Err()
		}
	}
	r := recordFrom(ctx)
	t, err := b.pick(r)
	if err != nil {
		return grpc.Address{}, nil, grpc.Errorf(codes.Unavailable, "v3balancer: %v", err)
	}
	if r != nil && r.kind != kindStream {
		r.issue(b, t)
		return grpc.Address{Addr: t.Addr()}, r.put, nil
	}
	p := b.eng.p
	return grpc.Address{Addr: t.Addr()}, func() { p.Done(t, picker.Outcome{}) }, nil
}

// pick turns the call's kind into a picker request. Reads hold the leader
// in reserve (picker.Request.Reserve): it takes them only while every
// follower is measurably slower, and a probe now and then. Serializable
// reads avoid lagging members unless all lag. The engine is shared, so a
// pick may land on a member that is up for another client but not for
// this one: such tickets are handed back and the pick repeated without
// that member, and after a few tries any member up here is taken.
func (b *Balancer) pick(r *record) (picker.Ticket, error) {
	req := picker.Request{Exclude: tagDown}
	k := kindOther
	if r != nil {
		k = r.kind
		if r.pin != "" {
			return b.eng.p.PickAddr(r.pin, picker.Unary)
		}
	}
	switch k {
	case kindWrite:
		// Writes keep their own estimate: the reserve rule compares the
		// leader's read estimate with the followers'.
		req.Prefer, req.Class = tagLeader, picker.ClassWrite
	case kindRead:
		req.Reserve = tagLeader
	case kindSerializable:
		req.Reserve = tagLeader
		req.Avoid = tagLagging
	case kindStream:
		req.Kind = picker.Stream
	}
	for i := 0; i < 3; i++ {
		t, err := b.eng.p.Pick(req)
		if err != nil {
			break
		}
		if b.isUp(t.Addr()) {
			return t, nil
		}
		b.eng.p.Done(t, picker.Outcome{Result: picker.Canceled})
		req.Skip = append(req.Skip, t.Addr())
	}
	b.mu.Lock()
	fallback := ""
	for a := range b.up {
		fallback = a
		break
	}
	b.mu.Unlock()
	if fallback == "" {
		return picker.Ticket{}, picker.ErrNoEligible
	}
	return b.eng.p.PickAddr(fallback, req.Kind)
}

// Close implements grpc.Balancer. The engine stops when its last Balancer
// closes; calling Close again does nothing.
func (b *Balancer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	if len(b.up) == 0 {
		close(b.upc) // wakes waiting Gets, which see closed
	}
	up := b.up
	b.up = make(map[string]bool)
	b.conn = nil
	close(b.notify)
	b.mu.Unlock()
	for a := range up {
		b.eng.addUp(a, -1)
	}
	b.eng.release(b)
	return nil
}
