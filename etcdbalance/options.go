package etcdbalance

import (
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Option configures a client made by New or DialOptions: its engine
// (WithPickerConfig) and its cluster-aware routing (the other options).
// New reports an invalid engine configuration, or an invalid
// WithHedgedReads budget, as an error that names the field and value; with
// DialOptions the same error comes from dialling (grpc reports it as an
// invalid default service config). The other routing options take no
// invalid values.
type Option func(*options)

// options is what Options set.
type options struct {
	picker  picker.Config
	routing routing
}

// WithPickerConfig sets the engine's configuration: the selection policy
// and its tuning (picker.Config states each field's default and limits;
// a zero field keeps its default), Clock and Rand included (for
// simulations and tests). Without it the engine runs on picker's defaults.
// The last one given wins; the routing options are separate and are not
// touched.
func WithPickerConfig(pc picker.Config) Option { return func(o *options) { o.picker = pc } }

// WithClusterView sets how often the cluster view probes every member with
// Status (default DefaultViewInterval, 1s, spread by ± 20%; 0 keeps the
// default), or switches the view off (negative). Without the view nothing
// knows the leader, the learners or the lag: WithLeaderWrites,
// WithFollowerReads, WithLearnerReads and WithLagThreshold have no effect,
// every call goes to the cheapest connected member (plain load-aware
// spreading), and the monotonic guard re-issues a stale read as a
// linearizable one. Each probe is one Status call on the client's own
// connection (no new connections), which also keeps the connection out of
// grpc's idle mode. A probe that gets no answer within max(interval, 3s)
// counts as failed.
func WithClusterView(interval time.Duration) Option {
	return func(o *options) {
		o.routing.viewInterval = setting(interval, DefaultViewInterval)
	}
}

// WithLeaderWrites switches leader routing of writes (Put, DeleteRange,
// Txn, Compact, lease grants and revocations, member, auth and leadership
// changes) on or off; default on. On, a write goes to the leader when the
// view knows it and its connection is up, saving the follower's hop to the
// leader; otherwise, and when off, to the cheapest voting member, which
// forwards it.
func WithLeaderWrites(on bool) Option { return func(o *options) { o.routing.leaderWrites = on } }

// WithFollowerReads switches leader avoidance for reads (Range) on or off;
// default on. On, a read goes to a follower unless every eligible follower
// is slower than the leader by picker.Config.ReserveRatio, or none is
// eligible: the leader already carries every write and all replication. Off, reads
// are spread over every eligible member, the leader included.
func WithFollowerReads(on bool) Option { return func(o *options) { o.routing.followerReads = on } }

// WithLearnerReads lets learners serve serializable reads when they are
// caught up (not lagging, see WithLagThreshold); default on. Off, learners
// serve nothing but the view's Status probes. Learners never receive
// writes, linearizable reads, streams other than Snapshot or other calls
// that etcd refuses on learners, whatever this option says.
func WithLearnerReads(on bool) Option { return func(o *options) { o.routing.learnerReads = on } }

// WithLagThreshold sets how many raft entries a member's applied index may
// trail the most advanced member's (as of the last probe round) before it
// gets no serializable reads until it catches up: default
// DefaultLagThreshold (1000; 0 keeps the default); negative switches lag
// exclusion off, so that lagging members (learners included) serve
// serializable reads like any other.
func WithLagThreshold(entries int64) Option {
	return func(o *options) {
		o.routing.lagThreshold = uint64(setting(entries, DefaultLagThreshold))
	}
}

// WithMonotonicReads switches the monotonic-read guard on or off; default
// on. On, the client never gets a KV answer whose revision is lower than
// one it had observed when the call started (see "Consistency" in the
// package doc for how, and what it costs). Off, a serializable read may be
// answered by a member that has not applied what an earlier answer showed.
func WithMonotonicReads(on bool) Option { return func(o *options) { o.routing.monotonic = on } }

// setting is the routing setting for an option's argument v: 0 keeps the
// default def, a negative value switches the feature off (0), any other
// value is taken.
func setting[T ~int64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// applyOptions folds opts into the defaults. The engine's configuration
// is validated once, by the engine that reg.create builds from it.
func applyOptions(opts []Option) options {
	o := options{routing: defaultRouting()}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}
