package v2compat

import (
	"fmt"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Defaults and limits of the options, as their docs state them, and the
// fixed settings of the transport.
const (
	defaultLeaderPollInterval = 5 * time.Second
	minLeaderPollInterval     = 10 * time.Millisecond
	defaultMonotonicRetries   = 3
	maxMonotonicRetries       = 16

	// leaderPollJitter spreads each poll interval by ± this fraction, so
	// that many clients started together do not poll in step.
	leaderPollJitter = 0.2
	// leaderPollTimeout bounds one leader lookup (and each member probe
	// it may need).
	leaderPollTimeout = 2 * time.Second
	// staleAfter is the number of stale answers in a row after which a
	// member is avoided by reads, watches and writes (picked only when no
	// other is eligible) for staleHold. A single stale answer proves
	// little: a healthy follower learns of a commit up to one heartbeat
	// after the leader, so reads issued right after a write often see it
	// one index behind.
	staleAfter = 3
	// staleHold is how long a stale member is avoided before it is given
	// reads again; one more stale answer then marks it again.
	staleHold = 2 * time.Second
	// failedHold is how long a member whose request has just failed
	// (refused, reset, also in the middle of an answer, timed out, 5xx) is
	// avoided by every request, unless it answers well first or no other
	// member is eligible. The engine charges such failures to the member's
	// cost, but it spreads watches by their count alone, so without this
	// the v2 client's retry of a watch cut by a member's crash would go
	// straight back to it (see the package documentation). A request the
	// caller canceled marks nothing.
	failedHold = time.Second
)

// Option configures a Transport. Options are applied in order; a later
// one overrides an earlier one. A bad value makes New fail with an error
// that names it.
type Option func(*options) error

type options struct {
	picker           picker.Config
	pollInterval     time.Duration // 0: polling off
	headerTimeout    time.Duration // 0: none
	monotonic        bool
	monotonicRetries int
	hedge            *picker.Budget // hedged reads; nil: off
}

func defaultOptions() options {
	return options{
		pollInterval:     defaultLeaderPollInterval,
		monotonic:        true,
		monotonicRetries: defaultMonotonicRetries,
	}
}

// WithPickerConfig sets the configuration of the engine that chooses a
// member for each request (policy, EWMA decay, ejection…). The default is
// the zero picker.Config: power of two choices over peak-EWMA cost. Errors
// in it are reported by New.
func WithPickerConfig(c picker.Config) Option {
	return func(o *options) error {
		o.picker = c
		return nil
	}
}

// WithLeaderPollInterval sets how often the leader is looked up with GET
// /v2/members/leader, each wait spread by ±20%. Writes (and the
// monotonic-read guard's last-resort quorum read) go to the leader found
// that way. Default 5s, also for zero; a negative value turns polling off
// (writes then go to any member, which forwards them); positive values
// below 10ms are refused. A failed write to the leader, a 5xx answer to a
// write and SetEndpoints trigger an early lookup.
func WithLeaderPollInterval(d time.Duration) Option {
	return func(o *options) error {
		switch {
		case d == 0:
			o.pollInterval = defaultLeaderPollInterval
		case d < 0:
			o.pollInterval = 0
		case d < minLeaderPollInterval:
			return fmt.Errorf("v2compat: leader poll interval %v is shorter than the minimum %v", d, minLeaderPollInterval)
		default:
			o.pollInterval = d
		}
		return nil
	}
}

// WithHeaderTimeout bounds the wait for response headers of GETs, watches
// (wait=true) excepted: they may legitimately wait for minutes. When it
// fires the request is canceled and the member is charged a timeout, which
// counts toward its ejection. Zero, the default, imposes no timeout of the
// transport's own.
//
// It never applies to writes. The v2 client re-sends any request that
// fails, Create and Delete excepted, on the next member: a timed-out
// compare-and-swap would be applied twice (and then fail against its own
// first copy). A GET that timed out gets no header timeout for the same
// length of time, so that the client's re-send of it waits for its answer:
// a List that is slow because the cluster is overloaded is sent twice at
// most, not to every member in turn.
//
// Set it to the v2 client's HeaderTimeoutPerRequest (package v2client
// does): that client enforces its timeout by closing req.Cancel, which a
// transport cannot tell apart from a caller giving up, so only with this
// option are its header timeouts charged to the member instead of being
// forgiven as cancellations.
func WithHeaderTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("v2compat: header timeout %v must not be negative", d)
		}
		o.headerTimeout = d
		return nil
	}
}

// WithMonotonicReads turns the monotonic-read guard on (the default) or off.
//
// With the guard on, a GET under /v2/keys whose X-Etcd-Index is lower than
// the highest index this transport has already seen in any answer (reads,
// writes, watches) is not returned: it is re-issued on another member, up
// to WithMonotonicRetries times, and then once as a quorum read
// (quorum=true) sent to the leader, which is linearizable and so cannot be
// behind.
//
// Cost: one more round trip per stale answer, and, when every member
// tried is stale, a quorum read, which goes through raft on every member.
// Stale answers are common in two cases: a member that has fallen behind
// (cut off from its peers, overloaded) and reads issued right after this
// client's own writes, which a follower learns of up to one heartbeat
// (100 ms by default) after the leader answered. A member with three
// stale answers in a row gets no reads for two seconds, so a member that is
// truly behind stops costing extra round trips. Turn the guard off for
// workloads that can tolerate reading an older state than one already
// seen.
func WithMonotonicReads(on bool) Option {
	return func(o *options) error {
		o.monotonic = on
		return nil
	}
}

// WithMonotonicRetries sets how many times a stale read is re-issued on
// another member before the quorum-read fallback: 0 goes straight to the
// fallback. Default 3; at most 16.
func WithMonotonicRetries(n int) Option {
	return func(o *options) error {
		if n < 0 || n > maxMonotonicRetries {
			return fmt.Errorf("v2compat: monotonic retries %d out of range 0..%d", n, maxMonotonicRetries)
		}
		o.monotonicRetries = n
		return nil
	}
}
