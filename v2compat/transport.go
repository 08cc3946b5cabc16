package v2compat

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// CancelableTransport is what the etcd v2 client takes as Config.Transport
// (in every vintage, go.etcd.io/etcd/client/v2 and
// github.com/coreos/etcd/client alike): a RoundTripper that can also cancel
// a request in flight. *http.Transport is one.
type CancelableTransport interface {
	http.RoundTripper
	CancelRequest(req *http.Request)
}

// Transport is a CancelableTransport that sends each request of an etcd v2
// client to the member that is cheapest now, instead of the one the client
// pinned. Give it to the v2 client as Config.Transport, with the same
// endpoints as Config.Endpoints. All methods are safe for concurrent use.
//
// A request whose scheme and host are one of the endpoints is rewritten to
// the member the picker chooses; any other request (a redirect to a foreign
// host, an endpoint the transport was not told about) passes through to the
// inner transport unchanged and unmeasured.
//
// The response body must be closed (or read to EOF), as with any
// RoundTripper: until then the request counts as in flight at its member.
type Transport struct {
	// 64-bit atomics first, for their alignment on 32-bit platforms.
	highest uint64 // highest X-Etcd-Index seen in any answer
	st      counters
	retries int32 // entries in resent

	inner CancelableTransport
	p     *picker.Picker
	opts  options
	rnd   picker.Source
	hedge *picker.Budget // nil: no hedged reads

	eps        atomic.Value // *endpointSet
	leaderV    atomic.Value // string: the leader's endpoint key, "" unknown
	saidLeader atomic.Value // string: the last leader reported to the events callback
	held       *heldEvents  // the engine's endpoint events, until t.mu is released

	mu     sync.Mutex // guards the fields below and the leader tag
	leader string
	ids    map[string]string // endpoint key -> member ID, for the leader lookup

	resentMu sync.Mutex
	resent   map[string]int64 // GET path?query -> end of its window without a header timeout

	callsMu sync.Mutex
	calls   map[*http.Request]*call // caller's request -> its call, for CancelRequest

	ctx       context.Context // canceled by Close
	stop      context.CancelFunc
	kick      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type counters struct {
	requests, passThrough, attempts, reissued, fallbacks uint64
	stale, regressions, polls, pollErrors                uint64
	hedged, hedgeWins                                    uint64
}

// Stats are the transport's counters since New.
type Stats struct {
	// Requests counts RoundTrip calls that were balanced.
	Requests uint64
	// PassedThrough counts RoundTrip calls for hosts outside the endpoint
	// set, passed to the inner transport unchanged.
	PassedThrough uint64
	// Attempts counts requests sent to members: one per balanced request,
	// plus the re-issues and fallbacks of the monotonic-read guard and the
	// copies of hedged reads. Nothing else is ever sent twice.
	Attempts uint64
	// Hedged counts the copies of hedged reads sent (WithHedgedReads);
	// HedgeWins those whose answer was the one returned.
	Hedged    uint64
	HedgeWins uint64
	// StaleAnswers counts read answers below HighestIndex that the guard
	// held back; Reissued and QuorumFallbacks count what it sent instead.
	StaleAnswers    uint64
	Reissued        uint64
	QuorumFallbacks uint64
	// Regressions counts read answers returned with an index below the
	// highest already seen: only with the guard off.
	Regressions uint64
	// HighestIndex is the highest X-Etcd-Index seen.
	HighestIndex uint64
	// Leader is the endpoint the last leader lookup found; "" when unknown.
	Leader string
	// LeaderPolls counts leader lookups; LeaderPollErrors those that
	// reached no member.
	LeaderPolls      uint64
	LeaderPollErrors uint64
	// Members is the engine's view of each member, keyed by the canonical
	// endpoint (lower-case scheme://host, default port dropped). Picks
	// counts one ticket for each attempt sent to a member (a request, one
	// try of the monotonic-read guard, or a hedged read's copy), whether it
	// got an answer or failed, plus one for each leader lookup and
	// member-ID probe, and, rarely, one for a pick that raced with
	// SetEndpoints and was picked again. Tags are internal to the
	// transport.
	Members []picker.EndpointStats
}

// New wraps inner, which does the actual HTTP (and TLS) work, in a
// Transport that balances over endpoints: the URLs of the etcd members,
// scheme://host[:port] with scheme http or https, as given to the v2
// client. It starts the leader poll (see WithLeaderPollInterval), so call
// Close when done with the transport.
//
// TLS: the inner transport dials the rewritten host, so with an
// *http.Transport each member's certificate is checked against the name
// in that member's endpoint, unless TLSClientConfig.ServerName pins one
// name for all of them.
func New(inner CancelableTransport, endpoints []string, opts ...Option) (*Transport, error) {
	if inner == nil {
		return nil, errors.New("v2compat: nil inner transport")
	}
	o := defaultOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	set, err := newEndpointSet(endpoints)
	if err != nil {
		return nil, err
	}
	held := &heldEvents{}
	o.picker.Events = held.wrap(o.picker.Events)
	p, err := picker.New(o.picker)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	t := &Transport{
		held:   held,
		inner:  inner,
		p:      p,
		opts:   o,
		rnd:    picker.NewSource(uint64(time.Now().UnixNano())),
		hedge:  o.hedge,
		ids:    make(map[string]string),
		resent: make(map[string]int64),
		calls:  make(map[*http.Request]*call),
		ctx:    ctx,
		stop:   stop,
		kick:   make(chan struct{}, 1),
	}
	t.leaderV.Store("")
	t.mu.Lock()
	err = t.installLocked(set)
	t.mu.Unlock()
	t.held.flush()
	if err != nil {
		stop()
		return nil, err
	}
	if o.pollInterval > 0 {
		t.wg.Add(1)
		go t.pollLoop()
	}
	return t, nil
}

// Close stops the leader poll and waits for it to end. The transport keeps
// working afterwards, with the leader it last knew. Close does not close
// the inner transport's idle connections: see CloseIdleConnections.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		t.stop()
		t.wg.Wait()
	})
	return nil
}

// CloseIdleConnections closes the inner transport's idle connections, if
// it has such a method (*http.Transport does).
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.inner.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Endpoints returns the endpoint set, in the order given.
func (t *Transport) Endpoints() []string { return t.set().strings() }

// SetEndpoints replaces the endpoint set. Members that stay keep their
// statistics. An empty list or a bad URL is refused, naming it, and the
// set is left as it was. It triggers an early leader lookup.
func (t *Transport) SetEndpoints(endpoints []string) error {
	set, err := newEndpointSet(endpoints)
	if err != nil {
		return err
	}
	t.mu.Lock()
	err = t.installLocked(set)
	t.mu.Unlock()
	t.held.flush()
	if err == nil {
		t.kickPoll()
	}
	return err
}

// leaderEndpoint returns the endpoint the last leader lookup found, ""
// if none.
func (t *Transport) leaderEndpoint() string {
	key := t.leaderV.Load().(string)
	if e := t.set().byKey[key]; e != nil {
		return e.scheme + "://" + e.host
	}
	return ""
}

// Stats returns the counters and the engine's view of each member.
func (t *Transport) Stats() Stats {
	return Stats{
		Requests:         atomic.LoadUint64(&t.st.requests),
		PassedThrough:    atomic.LoadUint64(&t.st.passThrough),
		Attempts:         atomic.LoadUint64(&t.st.attempts),
		StaleAnswers:     atomic.LoadUint64(&t.st.stale),
		Reissued:         atomic.LoadUint64(&t.st.reissued),
		QuorumFallbacks:  atomic.LoadUint64(&t.st.fallbacks),
		Hedged:           atomic.LoadUint64(&t.st.hedged),
		HedgeWins:        atomic.LoadUint64(&t.st.hedgeWins),
		Regressions:      atomic.LoadUint64(&t.st.regressions),
		HighestIndex:     atomic.LoadUint64(&t.highest),
		Leader:           t.leaderEndpoint(),
		LeaderPolls:      atomic.LoadUint64(&t.st.polls),
		LeaderPollErrors: atomic.LoadUint64(&t.st.pollErrors),
		Members:          t.p.Snapshot(),
	}
}

func (t *Transport) set() *endpointSet { return t.eps.Load().(*endpointSet) }

// now is the engine's time: monotonic and positive even when the wall clock
// steps (Go 1.8 has no monotonic reading), and on a step back it jumps
// past every hold, so the header-timeout windows end early, never late.
func (t *Transport) now() int64 { return int64(t.p.Now()) }

// installLocked makes set current in the picker and here, drops the state
// of members that left and tags the leader. Called with t.mu held.
func (t *Transport) installLocked(set *endpointSet) error {
	keys := make([]string, len(set.list))
	for i, e := range set.list {
		keys[i] = e.key
	}
	if err := t.p.SetEndpoints(keys); err != nil {
		return err
	}
	t.eps.Store(set)
	if set.byKey[t.leader] == nil && t.leader != "" {
		t.leader = ""
		t.leaderV.Store("")
	}
	for k := range t.ids {
		if set.byKey[k] == nil {
			delete(t.ids, k)
		}
	}
	t.tagLeaderLocked(set)
	return nil
}

// tagLeaderLocked puts tagLeader on the leader and on no other member.
func (t *Transport) tagLeaderLocked(set *endpointSet) {
	for _, e := range set.list {
		set, clear := picker.Tags(0), tagLeader
		if e.key == t.leader {
			set, clear = tagLeader, 0
		}
		// The set may have been replaced since it was loaded; an unknown
		// endpoint is then simply not tagged.
		_ = t.p.UpdateTags(e.key, set, clear)
	}
}
