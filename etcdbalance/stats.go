package etcdbalance

import (
	"cmp"
	"slices"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MemberStats is the engine's view of one member of a client. The
// booleans report the routing state that the balancer and the cluster view
// keep in the engine's tags; EndpointStats.Tags is left zero.
type MemberStats struct {
	picker.EndpointStats
	// Ready reports whether the client's connection to the member was READY
	// at the balancer's last update. Members that are not ready are never
	// picked.
	Ready bool
	// Leader, Learner and Lagging report what the cluster view found in
	// its last probe round (see MemberView for the details). All false
	// without a view.
	Leader, Learner, Lagging bool
}

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
			Leader:        s.Tags&tagLeader != 0,
			Learner:       s.Tags&tagLearner != 0,
			Lagging:       s.Tags&tagLagging != 0,
		}
		out[i].Tags = 0
	}
	slices.SortFunc(out, func(a, b MemberStats) int { return cmp.Compare(a.Addr, b.Addr) })
	return out, nil
}

// View is a client's cluster view and monotonic-guard counters, as
// returned by ClusterView.
type View struct {
	// Running reports whether a view runs for the client (New starts one
	// unless WithClusterView(-1); DialOptions clients need Attach).
	Running bool
	// Interval is the probe period (each one spread by ± viewJitter).
	Interval time.Duration
	// Rounds counts completed probe rounds. A round probes every member
	// whose connection is up (or whose role is not known yet) once.
	Rounds int64
	// Updated is when the last round completed; zero before the first.
	Updated time.Time
	// Leader is the leader's address as the client knows it
	// ("127.0.0.1:2379"), "" when the last round found none that answered;
	// LeaderID its member ID; Term the highest raft term reported.
	Leader   string
	LeaderID uint64
	Term     uint64
	// Members lists what the view knows of each member, by address.
	Members []MemberView
	// Guard counts the monotonic guard's work.
	Guard GuardStats
}

// MemberView is what the cluster view knows of one member, as of the last
// round it answered.
type MemberView struct {
	Addr string
	// Verified is false until the member has answered a probe; until then
	// it gets nothing that a learner would refuse (while some voter is
	// known).
	Verified bool
	ID       uint64
	Leader   bool // leads, and answered the last round
	Learner  bool
	// LeaderID is the leader the member reported, 0 for none; Term its
	// raft term.
	LeaderID uint64
	Term     uint64
	// AppliedIndex and CommittedIndex are the member's raft indexes;
	// Revision its store revision.
	AppliedIndex   uint64
	CommittedIndex uint64
	Revision       int64
	// Lag is how many entries AppliedIndex trailed the most advanced
	// member's in the round; Lagging is true when that exceeded the lag
	// threshold, which keeps the member out of serializable reads.
	Lag     uint64
	Lagging bool
	// Behind is true while the member is known to be below a revision the
	// client has seen, which keeps it out of serializable reads (see
	// "Consistency" in the package doc).
	Behind bool
	// Probes counts Status probes sent to the member (counted when sent);
	// ProbeFailures those that failed; LastError the last failure, "" after
	// an answer.
	Probes        int64
	ProbeFailures int64
	LastError     string
}

// GuardStats counts the monotonic guard's work for one client.
type GuardStats struct {
	// On reports whether the guard is on (WithMonotonicReads).
	On bool
	// Revision is the highest response revision the client has seen.
	Revision int64
	// Stale counts serializable reads answered below the revision the
	// client had seen when they started; each was re-issued.
	Stale int64
	// RetriedElsewhere, RetriedOnLeader and RetriedLinearizable count the
	// re-issues: to another member, to the leader, as a linearizable read.
	RetriedElsewhere, RetriedOnLeader, RetriedLinearizable int64
	// Resets counts the times the floor was lowered: a write or a
	// linearizable read was answered below it, which only a cluster whose
	// revision went back can do (restored from an older snapshot, or the
	// endpoints now reach another cluster). Each costs at most one stale
	// read's re-issues, and logs a warning.
	Resets int64
}

// ClusterView returns the cluster view of a client made by New, or by
// clientv3.New with DialOptions (after Attach for the view; the guard
// counters are there either way). Errors as for Stats.
func ClusterView(cli *clientv3.Client) (View, error) {
	e, err := entryOf(cli)
	if err != nil {
		return View{}, err
	}
	rt := e.rt
	out := View{Guard: GuardStats{On: rt.set.monotonic}}
	g := &e.guard
	out.Guard.Revision = g.maxRev.Load()
	out.Guard.Stale = g.stale.Load()
	out.Guard.RetriedElsewhere = g.retryElsewhere.Load()
	out.Guard.RetriedOnLeader = g.retryLeader.Load()
	out.Guard.RetriedLinearizable = g.retryLinear.Load()
	out.Guard.Resets = g.resets.Load()
	v := e.view.Load()
	if v == nil {
		return out, nil
	}
	out.Running = true
	select {
	case <-v.done:
		out.Running = false
	default:
	}
	out.Interval = v.interval
	out.Rounds = v.rounds.Load()
	v.mu.Lock()
	defer v.mu.Unlock()
	out.Updated, out.Leader, out.LeaderID, out.Term = v.updated, v.leader, v.leaderID, v.term
	for a, m := range v.members {
		out.Members = append(out.Members, MemberView{
			Addr: a, Verified: m.verified, ID: m.id,
			Leader: a == v.leader, Learner: m.learner,
			LeaderID: m.leaderID, Term: m.term,
			AppliedIndex: m.applied, CommittedIndex: m.commit, Revision: m.rev,
			Lag: m.lag, Lagging: m.lagging, Behind: m.needRev > 0,
			Probes: m.probes, ProbeFailures: m.failures, LastError: m.lastErr,
		})
	}
	slices.SortFunc(out.Members, func(a, b MemberView) int { return cmp.Compare(a.Addr, b.Addr) })
	return out, nil
}
