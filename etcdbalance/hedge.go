package etcdbalance

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// hedgeQuantile is the share of a member's recent answers that may come
// before the copy of a hedged read is sent (see WithHedgedReads), after
// "The Tail at Scale" (Dean and Barroso).
const hedgeQuantile = 0.95

// WithHedgedReads hedges serializable Ranges (see hedgeQuantile), within a
// budget (picker.Budget): each serializable Range earns the client budget
// of a token, up to 10 tokens, and each copy spends one, so copies never
// exceed budget of those reads (plus the 10 saved up), and hedging cannot
// feed an overload. budget must be in [0, 1]; 0, the default, is off;
// 0.05, the usual choice, adds at most 5%. Never hedged: writes,
// linearizable reads, streams, calls pinned with WithMember, and anything
// else. Both attempts are routed like any serializable read (lagging and,
// with the monotonic guard, behind members left out), and the guard checks
// the answer that wins.
func WithHedgedReads(budget float64) Option {
	return func(o *options) { o.routing.hedge = budget }
}

// checkHedge validates the WithHedgedReads budget.
func checkHedge(budget float64) error {
	if _, err := picker.NewBudget(budget); err != nil {
		return fmt.Errorf("etcdbalance: invalid configuration: hedged reads: %v", err)
	}
	return nil
}

// hedger is one client's hedging state: its budget.
type hedger struct {
	budget *picker.Budget
}

// newHedger returns nil when budget does not hedge (0, or invalid: the
// registry has refused those).
func newHedger(budget float64) *hedger {
	b, err := picker.NewBudget(budget)
	if b == nil || err != nil {
		return nil
	}
	return &hedger{budget: b}
}

// hedgeKey carries a *hedgeCall in the first attempt's context.
type hedgeKey struct{}

// hedgeCall is one hedged read: the first attempt runs on the caller's
// goroutine; its pick arms a timer, which sends the copy.
type hedgeCall struct {
	h       *hedger
	ctx     context.Context // the call's context, for the copy
	cancel1 context.CancelFunc
	// The call, for the copy.
	method  string
	req     *pb.RangeRequest
	cc      *grpc.ClientConn
	invoker grpc.UnaryInvoker
	opts    []grpc.CallOption
	mark    *readMark // the call's read mark, for the copy's
	peer2   peer.Peer // who answered the copy

	mu      sync.Mutex
	armed   bool
	over    bool // the first attempt has returned: no copy any more
	timer   *time.Timer
	addr    string // the first attempt's member
	sent    bool
	cancel2 context.CancelFunc
	done2   chan hedgeResult // the copy's result, once sent
}

type hedgeResult struct {
	resp *pb.RangeResponse
	err  error
}

// picked is called by the grpc picker when the first attempt has a member:
// it arms the timer once, at that member's quantile.
func (c *hedgeCall) picked(eng *picker.Picker, t picker.Ticket) {
	d, ok := eng.Quantile(t, hedgeQuantile)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed || c.over || !ok {
		return
	}
	c.armed, c.addr = true, t.Addr()
	c.timer = time.AfterFunc(d, c.fire)
}

// fire sends the copy, if the first attempt is still waiting and the
// budget allows.
func (c *hedgeCall) fire() {
	c.mu.Lock()
	if c.over || c.sent || !c.h.budget.Spend() {
		c.mu.Unlock()
		return
	}
	m2 := readMark{serial: true, skip: []string{c.addr}}
	if c.mark != nil {
		m2.ranged, m2.leader = c.mark.ranged, c.mark.leader
	}
	ctx, cancel := context.WithCancel(context.WithValue(c.ctx, readKey{}, &m2))
	c.sent, c.cancel2, c.done2 = true, cancel, make(chan hedgeResult, 1)
	done := c.done2
	// Copied while the first attempt is still out, so before the guard
	// may change req (it does once the call returns).
	req := new(pb.RangeRequest)
	copyFields(req, c.req)
	opts := append(ownResults(c.opts), grpc.Peer(&c.peer2))
	c.mu.Unlock()
	resp := new(pb.RangeResponse)
	err := c.invoker(ctx, c.method, req, resp, c.cc, opts...)
	if err == nil {
		c.cancel1() // the copy won: the first attempt is canceled, not blamed
	}
	done <- hedgeResult{resp, err}
}

// finish is called when the first attempt has returned err; it returns the
// copy's answer when the copy won, or nil to keep the first attempt's.
func (c *hedgeCall) finish(err error) *pb.RangeResponse {
	c.mu.Lock()
	c.over = true
	if c.timer != nil {
		c.timer.Stop()
	}
	sent, cancel2, done := c.sent, c.cancel2, c.done2
	c.mu.Unlock()
	if !sent {
		return nil
	}
	if err == nil {
		cancel2() // the first attempt won
		return nil
	}
	select {
	case r := <-done:
		cancel2()
		if r.err == nil {
			return r.resp
		}
	case <-c.ctx.Done():
		cancel2()
	}
	return nil
}

// invokeHedged runs a serializable Range with a hedge: the first attempt
// on this goroutine, the copy (if its time comes) on the timer's. The copy
// sends its own copy of req and decodes into its own response, which is
// copied into reply when it wins. Call options that write results
// (header, trailer) are left to the first attempt; a grpc.Peer is given the
// member that answered.
func (h *hedger) invokeHedged(ctx context.Context, method string, req *pb.RangeRequest, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) error {
	h.budget.Earn()
	out, ok := reply.(*pb.RangeResponse)
	if !ok {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	ctx1, cancel1 := context.WithCancel(ctx)
	defer cancel1()
	c := &hedgeCall{h: h, ctx: ctx, cancel1: cancel1, method: method, req: req, cc: cc, invoker: invoker, opts: opts, mark: readMarkOf(ctx)}
	err := invoker(context.WithValue(ctx1, hedgeKey{}, c), method, req, reply, cc, opts...)
	if won := c.finish(err); won != nil {
		copyFields(out, won)
		// The guard blames the member that answered: the caller's peer
		// is the copy's (written before finish received its result; the
		// first attempt, which returned, wrote its own before).
		for _, o := range opts {
			if po, ok := o.(grpc.PeerCallOption); ok && po.PeerAddr != nil {
				*po.PeerAddr = c.peer2
			}
		}
		return nil
	}
	return err
}

// hedgeCallOf returns the hedged read whose first attempt ctx is.
func hedgeCallOf(ctx context.Context) *hedgeCall {
	c, _ := ctx.Value(hedgeKey{}).(*hedgeCall)
	return c
}

// serialRead runs the attempt of a serializable Range that the interceptor
// makes: hedged when the client hedges reads, unless the call is pinned to
// a member.
func (rt *router) serialRead(ctx context.Context, method string, req *pb.RangeRequest, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) error {
	if rt.hedge == nil {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	if _, pinned := pinnedMember(ctx); pinned {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	return rt.hedge.invokeHedged(ctx, method, req, reply, cc, invoker, opts)
}

// ownResults drops the call options that write results into the caller's
// variables (peer, header, trailer, the finish callback): the first attempt
// fills them; the copy, which runs beside it, must not write them too.
func ownResults(opts []grpc.CallOption) []grpc.CallOption {
	out := make([]grpc.CallOption, 0, len(opts))
	for _, o := range opts {
		switch o.(type) {
		case grpc.PeerCallOption, grpc.HeaderCallOption, grpc.TrailerCallOption, grpc.OnFinishCallOption:
			continue
		}
		out = append(out, o)
	}
	return out
}
