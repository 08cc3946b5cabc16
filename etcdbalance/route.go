package etcdbalance

import (
	"sync/atomic"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Tags the cluster view puts on members in the engine (picker.Tags). Stats
// reports the main ones as MemberStats' Leader, Learner and Lagging; the
// routing rules in the package doc say what each one keeps a member out
// of.
const (
	// tagLeader marks the member that the last probe round found leading,
	// and that answered that round.
	tagLeader picker.Tags = 1 << iota
	// tagLearner marks a learner (a non-voting member). etcd learners
	// refuse every RPC but Status, serializable Range and Snapshot.
	tagLearner
	// tagLagging marks a member whose applied index trailed the most
	// advanced member's by more than the lag threshold in the last round.
	tagLagging
	// tagBehind marks a member that answered a serializable read with a
	// revision below one the client had already seen (monotonic guard):
	// a picker.Mark for 100ms, doubling while it keeps doing so up to the
	// probe interval, or until a probe shows that it has caught up.
	tagBehind
	// tagUnverified marks a member that has not yet answered a probe, so
	// its role (learner or voter) is not known. It is set only while the
	// view runs.
	tagUnverified
)

// tagDown marks, in the engine, a member whose connection is not READY, so
// that Pick never returns it. It belongs to the balancer; the view owns
// the tags above.
const tagDown picker.Tags = 1 << 31

// viewTags are the bits the view owns.
const viewTags = tagLeader | tagLearner | tagLagging | tagBehind | tagUnverified

// Defaults of the cluster-aware routing, as documented on the options.
const (
	// DefaultViewInterval is how often the cluster view probes every
	// member with Status, unless WithClusterView says otherwise. One Status per member per second is negligible
	// load for etcd and bounds how long a leader change goes unnoticed.
	DefaultViewInterval = time.Second
	// viewJitter spreads each interval uniformly by ± this fraction,
	// so that many clients started together do not probe in lockstep.
	viewJitter = 0.2
	// DefaultLagThreshold is how many raft entries a member's applied index
	// may trail the most advanced member's before it is kept out of
	// serializable reads, unless WithLagThreshold says otherwise. Healthy followers trail by a handful of entries,
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
	// followerReads: reads hold the leader in reserve
	// (picker.Request.Reserve).
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
// it holds no lock. The view writes it; it knows neither the view nor the
// balancer: the balancer listens for its changes (listen).
type router struct {
	set    routing
	engine *picker.Picker

	// viewOn is set while a view runs (from startView to its stop). While
	// it is, members are tagUnverified until a probe answers.
	viewOn atomic.Bool
	// settled is set once the view's first probe round is over. Until then,
	// calls that a learner would refuse and that find no member known to be
	// a voter wait for the view rather than risk one whose role is unknown.
	settled atomic.Bool
	// changed is called by kick; nil while nobody listens.
	changed atomic.Pointer[func()]
	hedge   *hedger // WithHedgedReads; nil = off
}

func newRouter(set routing, eng *picker.Picker) *router {
	return &router{set: set, engine: eng, hedge: newHedger(set.hedge)}
}

// kick tells the listener that the routing state changed: the balancer
// then publishes a new picker, so that calls waiting for one
// (balancer.ErrNoSubConnAvailable) are picked again.
func (rt *router) kick() {
	if f := rt.changed.Load(); f != nil {
		(*f)()
	}
}

// listen makes f the one function that kick calls, until cancel; a later
// listen replaces it (a rebuilt balancer of the channel), and cancel then
// leaves the newer one alone.
func (rt *router) listen(f func()) (cancel func()) {
	p := &f
	rt.changed.Store(p)
	return func() { rt.changed.CompareAndSwap(p, nil) }
}

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
// Lagging and behind members are avoided by serializable reads
// (picker.Request.Avoid): they serve only when no other member may, since
// a stale answer beats none (the guard re-checks it). The exclusion steps,
// strictest first, relax only what is safe to relax:
//
//  1. connected members, and for calls a learner refuses only members
//     known to be voters;
//  2. calls a learner refuses, once the first probe round is over: members
//     whose role is still unknown (their probes failed, so they are most
//     likely voters that are busy or that the client reaches badly);
//  3. calls a learner refuses, when no member of the set can be anything
//     but a learner: a learner, which refuses the call at once with etcd's
//     own error, as the stock client does.
//
// Until the first probe round is over, calls a learner refuses that find
// no known voter wait, and so do streams a learner refuses (a stream placed
// then would leave the members not yet known out for its whole life);
// calls whose only possible members are down wait too.
func pickRouted(eng *picker.Picker, rt *router, class rpcClass, kind picker.Kind, method string, mode override, mark *readMark) (t picker.Ticket, wait bool, err error) {
	req := picker.Request{Kind: kind, Class: costClass(class, method, mark)}
	if mark != nil {
		req.Skip = mark.skip
	}
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
		req.Prefer = tagLeader
	case mode == overrideAny:
	case class == rpcWrite && set.leaderWrites:
		req.Prefer = tagLeader
	case class == rpcRead && set.followerReads && req.Class != picker.ClassRange:
		// The leader carries every write and all replication: it serves
		// reads of single keys only while every follower is measurably
		// slower (picker.Config.ReserveRatio), and a probe now and then.
		// Lists are not held back: bound by the bandwidth of the link that
		// carries their answer rather than by the member, they queue
		// behind each other, and n links drain them faster than n-1. The
		// engine sends each to the shortest queue of Lists (see
		// picker.ClassRange), which keeps the leader's share of them near
		// 1/n, and lower while its writes make it slower.
		req.Reserve = tagLeader
	}

	// Serializable reads, backups and chunked reads want fresh members.
	if mode != overrideAny && (serial || method == methodSnapshot || method == methodRangeStream) {
		if set.lagThreshold > 0 {
			req.Avoid |= tagLagging
		}
		if set.monotonic || method == methodSnapshot {
			req.Avoid |= tagBehind
		}
	}
	var role picker.Tags // members that could refuse the call for their role
	if !learnerSafe {
		role = tagLearner | tagUnverified
	}
	if role != 0 && kind == picker.Stream && rt.viewOn.Load() && !rt.settled.Load() {
		// A stream lives for minutes: placed while only some members are
		// known to be voters, it would leave the others out for good. The
		// first round takes a round trip, or the probe timeout if a member
		// does not answer.
		return picker.Ticket{}, true, picker.ErrNoEligible
	}
	req.Exclude = tagDown | role
	if t, err = eng.Pick(req); err != picker.ErrNoEligible || role == 0 {
		return t, false, err
	}
	if rt.viewOn.Load() && !rt.settled.Load() {
		return picker.Ticket{}, true, picker.ErrNoEligible
	}
	req.Exclude = tagDown | tagLearner
	if t, err = eng.Pick(req); err != picker.ErrNoEligible {
		return t, false, err
	}
	if eng.Eligible(tagLearner) {
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
func costClass(class rpcClass, method string, mark *readMark) picker.Class {
	switch {
	case class == rpcWrite:
		return picker.ClassWrite
	case method == methodRangeStream || (mark != nil && mark.ranged):
		return picker.ClassRange
	}
	return picker.ClassPoint
}
