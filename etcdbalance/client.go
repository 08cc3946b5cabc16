package etcdbalance

import (
	"cmp"
	"context"
	"errors"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	ours := dialOptions(e.id, o.picker, &handle{id: e.id, e: e})
	cfg.DialOptions = append(slices.Clip(cfg.DialOptions), ours...)
	// clientv3.New authenticates, and may check the cluster's version, on
	// its connections before it returns: the view starts after it, so
	// nothing that New does waits for the view (which could not probe an
	// auth-enabled cluster before the token exists anyway).
	cli, err := clientv3.New(cfg)
	if err != nil {
		reg.release(e)
		return nil, err
	}
	reg.bindClient(cli, e)
	// Close cancels the client's context first thing; the balancer, closed
	// with the connection, holds the entry until it is gone.
	context.AfterFunc(cli.Ctx(), func() { reg.release(e) })
	// Make sure the client's own channel owns the engine, whichever channel
	// clientv3 dialled first; this also builds the balancer of a 3.7
	// client, whose channel starts idle.
	if !reg.claim(cli.ActiveConnection(), e) {
		logger.Warningf("etcdbalance: the client's channel did not answer the balancer's claim; Stats and the cluster view may miss it")
	}
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
// Each client built with the options gets an engine, a cluster view (once
// attached) and a monotonic guard of its own, so one value may serve
// several clients (an apiserver's main and events clients). A client's
// engine is owned by its own channel: Attach, Stats and ClusterView
// confirm which channel that is, should a throwaway channel that clientv3
// dials with the same options (for Maintenance.Status and friends) have
// come first; other channels get engines of their own. The engines are
// freed once the options and every ClientConn built with them are
// unreachable (closed and garbage-collected); New frees its engine when
// the client closes.
//
// If an option is invalid, dialling fails with an error that names it
// ("grpc: the provided default service config is invalid: etcdbalance: ...").
func DialOptions(opts ...Option) []grpc.DialOption {
	o, err := applyOptions(opts)
	if err != nil {
		if herr := checkHedge(o.routing.hedge); herr != nil {
			return badHedgeDialOptions(herr)
		}
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

type streamKey struct{}

func isStream(ctx context.Context) bool {
	return ctx != nil && ctx.Value(streamKey{}) != nil
}

// WithMember returns a context whose calls go to one member, whatever the
// policy says: for diagnostics and per-member probes (Status, HashKV) on
// the client's own connections. addr is the member's endpoint in any form
// the client accepts ("10.0.0.1:2379", "https://etcd-0:2379",
// "unix:///run/etcd.sock") or as Stats reports it. A call pinned to an
// address that is not one of the client's endpoints (or to "") fails at
// once with InvalidArgument naming it; a known member that is not
// connected makes the call wait for it, within the call's deadline. The
// call is still counted in the member's statistics.
func WithMember(ctx context.Context, addr string) context.Context {
	pinsUsed.Store(true)
	return context.WithValue(ctx, memberKey{}, memberAddr(addr))
}

// memberAddr turns an endpoint as clientv3 accepts it into the address its
// resolver gives grpc, which is how the balancer and the engine name the
// member: the scheme of http(s) URLs goes, unix(s) endpoints become grpc's
// unix addresses, anything else stays as it is. It is idempotent, so an
// address that Stats reported maps to itself.
func memberAddr(ep string) string {
	for _, scheme := range [...]string{"unix", "unixs"} {
		rest, ok := strings.CutPrefix(ep, scheme+":")
		if !ok {
			continue
		}
		if path, ok := strings.CutPrefix(rest, "//"); ok {
			if strings.HasPrefix(path, "/") {
				return "unix://" + path // absolute: unix:///run/etcd.sock
			}
			return "unix:" + path // etcd's relative form, unix://etcd.sock
		}
		return "unix:" + rest
	}
	if i := strings.Index(ep, "://"); i >= 0 {
		if u, err := url.Parse(ep); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
			return u.Host
		}
	}
	return ep
}

type memberKey struct{}

// pinsUsed spares every pick the context lookup until WithMember has been
// called once in the process.
var pinsUsed atomic.Bool

// pinnedMember returns the member a call is pinned to with WithMember;
// ok with an empty address too, which checkPin refuses.
func pinnedMember(ctx context.Context) (string, bool) {
	if !pinsUsed.Load() || ctx == nil {
		return "", false
	}
	s, ok := ctx.Value(memberKey{}).(string)
	return s, ok
}

// checkPin fails a call pinned to an address that is not one of the
// client's members, before it is sent: grpc would rewrite a picker's
// InvalidArgument to Internal, and clientv3 retries Unavailable.
func (e *entry) checkPin(ctx context.Context) error {
	pin, ok := pinnedMember(ctx)
	if !ok {
		return nil
	}
	if pin == "" {
		return status.Error(codes.InvalidArgument, "etcdbalance: WithMember: empty member address")
	}
	if eps := e.engine.Endpoints(); !slices.Contains(eps, pin) {
		return status.Errorf(codes.InvalidArgument, "etcdbalance: WithMember: %q is not one of the client's endpoints %q", pin, eps)
	}
	return nil
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
