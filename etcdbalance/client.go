package etcdbalance

import (
	"cmp"
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// New is clientv3.New with every RPC of the client balanced by this
// package: it returns a plain *clientv3.Client. cfg.DialOptions are kept;
// the balancer's options are appended after them. Invalid options are
// reported before anything is dialled. The engine lives until the client is
// closed; Stats reads it. New also starts the cluster view (unless
// WithClusterView switches it off), which routes writes to the leader,
// reads to the followers and keeps learners and lagging members safe (see
// the package doc); ClusterView reads it. It stops when the client closes.
func New(cfg clientv3.Config, opts ...Option) (*clientv3.Client, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	e, err := reg.create(o.picker, o.routing)
	if err != nil {
		return nil, err
	}
	if o.routing.viewInterval > 0 {
		// Before dialling, so that the balancer marks every member
		// unverified from the start.
		e.rt.viewOn.Store(true)
	}
	ours := dialOptions(e.id, o.picker, &handle{id: e.id, e: e})
	cfg.DialOptions = append(slices.Clip(cfg.DialOptions), ours...)
	cli, err := clientv3.New(cfg)
	if err != nil {
		reg.release(e)
		return nil, err
	}
	reg.bindClient(cli, e)
	// Close cancels the client's context first thing; the balancer, closed
	// with the connection, holds the entry until it is gone.
	context.AfterFunc(cli.Ctx(), func() { reg.release(e) })
	// Build the balancer now, so that this channel owns the engine before
	// any throwaway connection (Maintenance.Status and friends) dials with
	// the same options. client/v3 3.7 dials with grpc.NewClient, which
	// starts idle.
	cli.ActiveConnection().Connect()
	if o.routing.viewInterval > 0 {
		startView(cli.Ctx(), cli, e)
	}
	return cli, nil
}

// DialOptions returns the dial options that put a client on this package's
// balancer, for code that builds its own clientv3.Config:
//
//	cfg.DialOptions = append(cfg.DialOptions, etcdbalance.DialOptions()...)
//	cli, err := clientv3.New(cfg)
//
// The options override the round_robin policy that clientv3's resolver
// asks for (grpc.WithDisableServiceConfig with
// grpc.WithDefaultServiceConfig) and add a chained stream interceptor and a
// chained unary interceptor (the monotonic guard, and the marker that tells
// serializable reads apart); etcd's own interceptors are left in place.
//
// The cluster view does not start by itself here, since the options exist
// before the client: call Attach once the client is built. Until then, or
// without it, the client spreads every call by load alone over the
// connected members (as if WithClusterView(-1) were given), learners
// included, and the monotonic guard re-issues a stale read as a
// linearizable one.
//
// Call DialOptions once per client: the options carry one engine, which
// the first channel that uses them owns; other channels dialled with the
// same options (clientv3's throwaway connections for Maintenance.Status
// and friends) get engines of their own. The engine is freed once the
// options and every ClientConn built with them are unreachable (closed
// and garbage-collected); New frees it when the client closes.
//
// If an option is invalid, dialling fails with an error that names it
// ("grpc: the provided default service config is invalid: etcdbalance: ...").
func DialOptions(opts ...Option) []grpc.DialOption {
	o, err := applyOptions(opts)
	if err != nil {
		// The config carries the bad value, so the dial fails with the
		// parser's description of it.
		return dialOptions("", o.picker, &handle{})
	}
	e, err := reg.create(o.picker, o.routing)
	if err != nil { // validated above
		return dialOptions("", o.picker, &handle{})
	}
	h := &handle{id: e.id, e: e}
	// e must not refer back to h (nor to any ClientConn, which refers to
	// h through the interceptors), or h would never be collected: the
	// balancer drops its registration in e when it closes, and the view
	// keeps the connection on its goroutine's stack only.
	runtime.AddCleanup(h, reg.release, e)
	return dialOptions(e.id, o.picker, h)
}

func dialOptions(id string, pc picker.Config, h *handle) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDisableServiceConfig(),
		grpc.WithDefaultServiceConfig(serviceConfig(id, pc)),
		// Chained: grpc.WithStreamInterceptor and grpc.WithUnaryInterceptor
		// would replace etcd's (its retry interceptor among them).
		grpc.WithChainStreamInterceptor(h.streamInterceptor),
		grpc.WithChainUnaryInterceptor(h.unaryInterceptor),
	}
}

// handle is referenced by the dial options (through the interceptor), and
// so by every ClientConn built with them: when it becomes garbage, no
// channel can use its engine any more.
type handle struct {
	id string // also keeps handle off the tiny allocator, which would delay its cleanup
	e  *entry // nil when the options were invalid
}

// streamInterceptor marks streams whose method Classify does not know, so
// that the picker counts them as streams and not as requests in flight.
func (h *handle) streamInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if Classify(method) == Other && (desc.ServerStreams || desc.ClientStreams) {
		ctx = context.WithValue(ctx, streamKey{}, true)
	}
	return streamer(ctx, desc, cc, method, opts...)
}

type streamKey struct{}

func isStream(ctx context.Context) bool {
	return ctx != nil && ctx.Value(streamKey{}) != nil
}

// WithMember returns a context whose calls go to one member, whatever the
// policy says: for diagnostics and per-member probes (Status, HashKV) on
// the client's own connections. addr is the member's endpoint as given to
// the client ("10.0.0.1:2379"; an "http://" or "https://" prefix is
// ignored). A member the client does not know fails the call with
// Unavailable; a known member that is not connected makes the call wait
// for it, within the call's deadline. The call is still counted in the
// member's statistics.
func WithMember(ctx context.Context, addr string) context.Context {
	if i := strings.Index(addr, "://"); i >= 0 {
		addr = addr[i+3:]
	}
	pinsUsed.Store(true)
	return context.WithValue(ctx, memberKey{}, addr)
}

type memberKey struct{}

// pinsUsed spares every pick the context lookup until WithMember has been
// called once in the process.
var pinsUsed atomic.Bool

func pinnedMember(ctx context.Context) (string, bool) {
	if !pinsUsed.Load() || ctx == nil {
		return "", false
	}
	s, ok := ctx.Value(memberKey{}).(string)
	return s, ok && s != ""
}

// MemberStats is the engine's view of one member of a client. Tags holds
// the cluster view's tags (TagLeader, TagLearner, ...); Leader, Learner and
// Lagging spell the main ones out.
type MemberStats struct {
	picker.EndpointStats
	// Ready reports whether the client's connection to the member was READY
	// at the balancer's last update. Members that are not ready are never
	// picked.
	Ready bool
	// Leader, Learner and Lagging report TagLeader, TagLearner and
	// TagLagging: what the cluster view found in its last probe round.
	// All false without a view.
	Leader, Learner, Lagging bool
}

// Errors returned by Stats.
var (
	ErrNotBalanced  = errors.New("etcdbalance: client was not made by etcdbalance.New or with etcdbalance.DialOptions (or has not dialled yet)")
	ErrClientClosed = errors.New("etcdbalance: client is closed")
)

// Stats returns the engine's per-member statistics for a client made by
// New, or by clientv3.New with DialOptions (once the client has dialled),
// sorted by address. Counters are cumulative since the member joined the
// client's endpoint set. Streams counts open streams (watches,
// keep-alives), InFlight unary calls in flight, Picks every pick (the
// cluster view's probes included). It returns ErrClientClosed once the
// client is closed, and ErrNotBalanced for any other client.
func Stats(cli *clientv3.Client) ([]MemberStats, error) {
	e, err := entryOf(cli)
	if err != nil {
		return nil, err
	}
	snap := e.engine.Snapshot()
	out := make([]MemberStats, len(snap))
	for i, s := range snap {
		out[i] = MemberStats{
			EndpointStats: s,
			Ready:         s.Tags&tagDown == 0,
			Leader:        s.Tags&TagLeader != 0,
			Learner:       s.Tags&TagLearner != 0,
			Lagging:       s.Tags&TagLagging != 0,
		}
		out[i].Tags &^= tagDown
	}
	slices.SortFunc(out, func(a, b MemberStats) int { return cmp.Compare(a.Addr, b.Addr) })
	return out, nil
}
