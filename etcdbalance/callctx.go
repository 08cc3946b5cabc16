package etcdbalance

// What a call's context carries: the per-call options of the public API
// (WithMember, WithLeader, WithAnyMember), and the marks that the
// interceptors leave for the picker, since grpc's PickInfo carries the
// method and the context but not the request.

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

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

// Per-call routing overrides, carried in the context.
type override uint8

const (
	overrideNone override = iota
	overrideLeader
	overrideAny
)

type overrideKey struct{}

// overridesUsed spares every pick the context lookup until WithLeader or
// WithAnyMember has been called once in the process.
var overridesUsed atomic.Bool

// WithLeader returns a context whose calls go to the leader, whatever
// their kind: for reads that must not wait for a follower's ReadIndex round
// trip, or for tools that want the leader's own answer. When no leader is
// known (no cluster view, or the leader did not answer the last probe) or
// its connection is down, the call is routed as usual. Learners are kept
// out as usual.
func WithLeader(ctx context.Context) context.Context {
	overridesUsed.Store(true)
	return context.WithValue(ctx, overrideKey{}, overrideLeader)
}

// WithAnyMember returns a context whose calls ignore the cluster-aware
// preferences: no leader preference for writes, no leader avoidance for
// reads, no exclusion of lagging or behind members; the plain load-aware
// choice among the connected members. Learners are still kept out of the
// calls they refuse (anything but Status, serializable Range and
// Snapshot), since sending them there could only fail. The monotonic guard
// still checks the answer.
func WithAnyMember(ctx context.Context) context.Context {
	overridesUsed.Store(true)
	return context.WithValue(ctx, overrideKey{}, overrideAny)
}

func overrideOf(ctx context.Context) override {
	if !overridesUsed.Load() || ctx == nil {
		return overrideNone
	}
	o, _ := ctx.Value(overrideKey{}).(override)
	return o
}

// readMark is put into the context of a serializable Range (serial), of a
// Range over a range of keys (ranged) and of a RangeStream by the
// interceptors: PickInfo carries the method, not the request, so this is
// how the picker tells a serializable read from a linearizable one, and a
// List from the read of one key. It flows one way, interceptor to picker,
// and never changes; the guard learns which member answered from grpc's
// peer (grpc.Peer), not from the picker.
type readMark struct {
	serial bool // a serializable Range: learners and lagging members are told apart
	ranged bool // a Range with a range_end: judged by the engine's range estimate
	leader bool // the guard's second retry: the leader only
	// skip: a hedged read's copy (hedge.go) never goes to the member its
	// first attempt went to.
	skip []string
}

type readKey struct{}

func readMarkOf(ctx context.Context) *readMark {
	if ctx == nil {
		return nil
	}
	m, _ := ctx.Value(readKey{}).(*readMark)
	return m
}

// streamKey marks a stream whose method classify does not know, so that
// the picker counts it as a stream.
type streamKey struct{}

func isStream(ctx context.Context) bool {
	return ctx != nil && ctx.Value(streamKey{}) != nil
}

// probeKey marks the view's own Status calls, which the guard ignores:
// the user never sees their answers.
type probeKey struct{}

func isProbe(ctx context.Context) bool { return ctx.Value(probeKey{}) != nil }
