package etcdbalance

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Tags the cluster view puts on members in the engine (picker.Tags). Stats
// reports them in MemberStats.Tags; the routing rules in the package doc
// say what each one keeps a member out of.
const (
	// TagLeader marks the member that the last probe round found leading,
	// and that answered that round.
	TagLeader picker.Tags = 1 << iota
	// TagLearner marks a learner (a non-voting member). etcd learners
	// refuse every RPC but Status, serializable Range and Snapshot.
	TagLearner
	// TagLagging marks a member whose applied index trailed the most
	// advanced member's by more than the lag threshold in the last round.
	TagLagging
	// TagBehind marks a member that answered a serializable read with a
	// revision below one the client had already seen (monotonic guard):
	// for 100ms, doubling while it keeps doing so up to the probe
	// interval, or until a probe shows that it has caught up.
	TagBehind
	// TagUnverified marks a member that has not yet answered a probe, so
	// its role (learner or voter) is not known. It is set only while the
	// view runs.
	TagUnverified
)

// tagDown marks, in the engine, a member whose connection is not READY, so
// that Pick never returns it. It belongs to the balancer; the view owns
// the exported tags above.
const tagDown picker.Tags = 1 << 31

// viewTags are the bits the view owns.
const viewTags = TagLeader | TagLearner | TagLagging | TagBehind | TagUnverified

// Defaults of the cluster-aware routing, as documented on the options.
const (
	// DefaultViewInterval is how often the cluster view probes every
	// member with Status. One Status per member per second is negligible
	// load for etcd and bounds how long a leader change goes unnoticed.
	DefaultViewInterval = time.Second
	// DefaultViewJitter spreads each interval uniformly by ± this fraction,
	// so that many clients started together do not probe in lockstep.
	DefaultViewJitter = 0.2
	// DefaultLagThreshold is how many raft entries a member's applied index
	// may trail the most advanced member's before it is kept out of
	// serializable reads. Healthy followers trail by a handful of entries,
	// and a round's probes, sent together, are answered within
	// milliseconds of each other: at 10,000 writes a second that skew is
	// ~100 entries, well inside 1000. A member that has really fallen
	// behind (cut off from its peers, overloaded, restoring a snapshot)
	// crosses it long before etcd's own limits (5000 entries between
	// commit and apply before it refuses requests; 5000 entries before the
	// leader sends a snapshot instead of the log).
	DefaultLagThreshold = 1000
)

// routing is the cluster-aware part of a client's configuration. Every
// rule can be switched off; the zero value switches all of them off, and
// defaultRouting switches them on.
type routing struct {
	// viewInterval is the probe period of the cluster view; 0 = no view.
	viewInterval time.Duration
	// lagThreshold: members further behind get no serializable reads;
	// 0 = off.
	lagThreshold uint64
	// leaderWrites: writes prefer the leader.
	leaderWrites bool
	// followerReads: reads avoid the leader (picker.Request.Avoid).
	followerReads bool
	// learnerReads: learners may serve serializable reads.
	learnerReads bool
	// monotonic: the monotonic-read guard.
	monotonic bool
	// hedge: the WithHedgedReads budget; 0 = no hedging.
	hedge float64
}

func defaultRouting() routing {
	return routing{
		viewInterval:  DefaultViewInterval,
		lagThreshold:  DefaultLagThreshold,
		leaderWrites:  true,
		followerReads: true,
		learnerReads:  true,
		monotonic:     true,
	}
}

// router is the shared routing state of one registered engine: the
// settings and whether a view runs. The grpcPicker reads it on every pick;
// it holds no lock.
type router struct {
	set    routing
	engine *picker.Picker

	// viewOn is set while a view runs (from startView to its stop). While
	// it is, members are TagUnverified until a probe answers.
	viewOn atomic.Bool
	// settled is set once the view's first probe round is over. Until then,
	// calls that a learner would refuse and that find no member known to be
	// a voter wait for the view rather than risk one whose role is unknown.
	settled atomic.Bool
	// view is the running view, nil until one starts.
	view atomic.Pointer[view]
	// bal is the balancer attached to the engine, to republish its picker
	// when calls are waiting for the view; nil while none is.
	bal atomic.Pointer[etcdBalancer]

	// behindExpiry is the earliest end of a TagBehind hold, in Unix
	// nanoseconds; 0 when no member is held.
	behindExpiry atomic.Int64
	hedge        *hedger // WithHedgedReads; nil = off
}

// expiryAt lowers behindExpiry to t.
func (rt *router) expiryAt(t time.Time) {
	n := t.UnixNano()
	for {
		cur := rt.behindExpiry.Load()
		if (cur != 0 && cur <= n) || rt.behindExpiry.CompareAndSwap(cur, n) {
			return
		}
	}
}

// expireBehind ends the TagBehind holds that are due. It costs one atomic
// load while none is.
func (rt *router) expireBehind() {
	exp := rt.behindExpiry.Load()
	if exp == 0 {
		return
	}
	if now := time.Now(); now.UnixNano() >= exp {
		if v := rt.view.Load(); v != nil {
			v.expireBehind(now)
		}
	}
}

func newRouter(set routing, eng *picker.Picker) *router {
	return &router{set: set, engine: eng, hedge: newHedger(set.hedge)}
}

// kick makes the attached balancer publish a new picker, so that calls
// waiting for one (balancer.ErrNoSubConnAvailable) are picked again.
func (rt *router) kick() {
	if b := rt.bal.Load(); b != nil {
		b.republish()
	}
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
// List from the read of one key. The picker writes the member it picked into addr, for
// the monotonic guard. grpc picks in the calling goroutine, before the call
// returns (a stream: before the streamer returns), so the interceptor
// reads addr afterwards without a race.
type readMark struct {
	addr   string
	serial bool // a serializable Range: learners and lagging members are told apart
	ranged bool // a Range with a range_end: judged by the engine's range estimate
	leader bool // the guard's second retry: the leader only
}

type readKey struct{}

func readMarkOf(ctx context.Context) *readMark {
	if ctx == nil {
		return nil
	}
	m, _ := ctx.Value(readKey{}).(*readMark)
	return m
}

// probeKey marks the view's own Status calls, which the guard ignores:
// the user never sees their answers.
type probeKey struct{}

func isProbe(ctx context.Context) bool { return ctx.Value(probeKey{}) != nil }

// methodStatus is the one call besides serializable Range that learners
// serve (etcd's isRPCSupportedForLearner). Snapshot is a stream learners
// serve too, but a backup from a learner, or from any member that lags,
// can miss recent writes: it goes to caught-up voting members.
const (
	methodStatus   = "/etcdserverpb.Maintenance/Status"
	methodSnapshot = "/etcdserverpb.Maintenance/Snapshot"
	// methodRangeStream is 3.7's chunked Range. The request is sent after
	// the pick, so whether it is serializable is not known when it is
	// routed: it gets the lag exclusion either way (a lagging member would
	// make a linearizable one wait for its apply too), and it is a stream
	// to etcd, which learners refuse.
	methodRangeStream = "/etcdserverpb.KV/RangeStream"
)

// pickRouted asks the engine for a member for one call, by the routing
// rules (see the package doc). It allocates nothing. wait is true when the
// call must wait for a new picker (balancer.ErrNoSubConnAvailable): the
// view has not yet told which members are voters, or the only members that
// may serve the call are not connected.
//
// The exclusion steps, strictest first, relax only what is safe to relax:
//
//  1. connected members, not lagging or behind (serializable reads), and
//     for calls a learner refuses only members known to be voters;
//  2. the same, lagging and behind ones allowed: a stale answer beats none
//     (the guard re-checks it);
//  3. calls a learner refuses, once the first probe round is over: members
//     whose role is still unknown (their probes failed, so they are most
//     likely voters that are busy or that the client reaches badly);
//  4. calls a learner refuses, when no member of the set can be anything
//     but a learner: a learner, which refuses the call at once with etcd's
//     own error, as the stock client does.
//
// Until the first probe round is over, calls a learner refuses that find
// no known voter wait, and so do streams a learner refuses (a stream placed
// then would leave the members not yet known out for its whole life);
// calls whose only possible members are down wait too.
func pickRouted(eng *picker.Picker, rt *router, class Class, kind picker.Kind, method string, mode override, mark *readMark) (t picker.Ticket, wait bool, err error) {
	req := picker.Request{Kind: kind, Class: costClass(class, method, mark)}
	if rt == nil {
		req.Exclude = tagDown
		t, err = eng.Pick(req)
		return t, false, err
	}
	set := &rt.set
	serial := mark != nil && mark.serial
	// Learners refuse every stream but Snapshot, serializable RangeStreams
	// included.
	learnerSafe := (serial && set.learnerReads && method != methodRangeStream) || method == methodStatus

	switch {
	case mode == overrideLeader || (mark != nil && mark.leader):
		req.Prefer = TagLeader
	case mode == overrideAny:
	case class == Write && set.leaderWrites:
		req.Prefer = TagLeader
	case class == Read && set.followerReads:
		// The leader carries every write and all replication: it serves
		// reads only while every follower is measurably slower
		// (picker.Config.ReserveRatio), and a probe now and then.
		req.Reserve = TagLeader
	}

	var fresh picker.Tags // what serializable reads, backups and chunked reads want fresh members for
	if mode != overrideAny && (serial || method == methodSnapshot || method == methodRangeStream) {
		if set.lagThreshold > 0 {
			fresh |= TagLagging
		}
		if set.monotonic || method == methodSnapshot {
			fresh |= TagBehind
		}
	}
	var role picker.Tags // members that could refuse the call for their role
	if !learnerSafe {
		role = TagLearner | TagUnverified
	}
	if role != 0 && kind == picker.Stream && rt.viewOn.Load() && !rt.settled.Load() {
		// A stream lives for minutes: placed while only some members are
		// known to be voters, it would leave the others out for good. The
		// first round takes a round trip, or the probe timeout if a member
		// does not answer.
		return picker.Ticket{}, true, picker.ErrNoEligible
	}
	for _, ex := range [...]picker.Tags{tagDown | role | fresh, tagDown | role} {
		req.Exclude = ex
		if t, err = eng.Pick(req); err != picker.ErrNoEligible {
			return t, false, err
		}
		if fresh == 0 {
			break
		}
	}
	if role == 0 {
		return t, false, err
	}
	if rt.viewOn.Load() && !rt.settled.Load() {
		return picker.Ticket{}, true, picker.ErrNoEligible
	}
	for _, ex := range [...]picker.Tags{tagDown | TagLearner | fresh, tagDown | TagLearner} {
		req.Exclude = ex
		if t, err = eng.Pick(req); err != picker.ErrNoEligible {
			return t, false, err
		}
	}
	if eng.Eligible(TagLearner) {
		// A member that may be a voter exists but is not connected: wait
		// for it within the call's deadline, as for any member that is down.
		return picker.Ticket{}, true, picker.ErrNoEligible
	}
	req.Prefer, req.Reserve, req.Exclude = 0, 0, tagDown
	t, err = eng.Pick(req)
	return t, false, err
}

// costClass is the engine's latency class of a call: writes, Lists (a
// Range with a range_end, or a RangeStream) and everything else (point
// reads, status, leases) keep apart estimates, so that a member that has
// just served a 2 MB List does not look slow for the reads of one key.
func costClass(class Class, method string, mark *readMark) picker.Class {
	switch {
	case class == Write:
		return picker.ClassWrite
	case method == methodRangeStream || (mark != nil && mark.ranged):
		return picker.ClassRange
	}
	return picker.ClassPoint
}
