package v2compat

//lint:file-ignore SA1019 io/ioutil and req.Cancel are deliberate: this file must build with Go 1.8, and every v2 client cancels through req.Cancel.

import (
	"context"
	"errors"
	"io"
	"io/ioutil"
	"net/http"
	"strconv"
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

// errCanceled is returned when the caller gave up between two attempts of
// one read and its context has no error of its own (req.Cancel was closed).
var errCanceled = errors.New("v2compat: request canceled")

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
	retries int32  // entries in resent
	st      counters

	inner CancelableTransport
	p     *picker.Picker
	opts  options
	rnd   picker.Source

	eps     atomic.Value // *endpointSet
	leaderV atomic.Value // string: the leader's endpoint key, "" unknown

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
}

// Stats are the transport's counters since New.
type Stats struct {
	// Requests counts RoundTrip calls that were balanced.
	Requests uint64
	// PassedThrough counts RoundTrip calls for hosts outside the endpoint
	// set, passed to the inner transport unchanged.
	PassedThrough uint64
	// Attempts counts requests sent to members: one per balanced request,
	// plus the re-issues and fallbacks of the monotonic-read guard. Nothing
	// else is ever sent twice.
	Attempts uint64
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
}

// New wraps inner, which does the actual HTTP (and TLS) work, in a
// Transport that balances over endpoints: the URLs of the etcd members,
// scheme://host[:port] with scheme http or https, as given to the v2
// client. It starts the leader poll (see LeaderPollInterval), so call
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
	p, err := picker.New(o.picker)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	t := &Transport{
		inner:  inner,
		p:      p,
		opts:   o,
		rnd:    picker.NewSource(uint64(time.Now().UnixNano())),
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

// Picker returns the engine, for its Snapshot. In the snapshot, Picks
// counts one ticket for each attempt sent to a member (a request, or one
// try of the monotonic-read guard), whether it got an answer or failed,
// plus one for each leader lookup and member-ID probe, and, rarely, one for
// a pick that raced with SetEndpoints and was picked again.
func (t *Transport) Picker() *picker.Picker { return t.p }

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
	if err == nil {
		t.kickPoll()
	}
	return err
}

// Leader returns the endpoint the last leader lookup found, "" if none.
func (t *Transport) Leader() string {
	key := t.leaderV.Load().(string)
	if e := t.set().byKey[key]; e != nil {
		return e.scheme + "://" + e.host
	}
	return ""
}

// Stats returns the counters.
func (t *Transport) Stats() Stats {
	return Stats{
		Requests:         atomic.LoadUint64(&t.st.requests),
		PassedThrough:    atomic.LoadUint64(&t.st.passThrough),
		Attempts:         atomic.LoadUint64(&t.st.attempts),
		StaleAnswers:     atomic.LoadUint64(&t.st.stale),
		Reissued:         atomic.LoadUint64(&t.st.reissued),
		QuorumFallbacks:  atomic.LoadUint64(&t.st.fallbacks),
		Regressions:      atomic.LoadUint64(&t.st.regressions),
		HighestIndex:     atomic.LoadUint64(&t.highest),
		Leader:           t.Leader(),
		LeaderPolls:      atomic.LoadUint64(&t.st.polls),
		LeaderPollErrors: atomic.LoadUint64(&t.st.pollErrors),
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

// RoundTrip sends req to the member chosen for it. See the package
// documentation for how requests are classified and measured.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req == nil || req.URL == nil {
		return nil, errors.New("v2compat: request without URL")
	}
	if t.set().match(req.URL) == nil {
		atomic.AddUint64(&t.st.passThrough, 1)
		return t.inner.RoundTrip(req)
	}
	atomic.AddUint64(&t.st.requests, 1)
	cl := classify(req)
	c := &call{t: t, orig: req, class: cl, cost: costClass(req, cl)}
	t.callsMu.Lock()
	t.calls[req] = c
	t.callsMu.Unlock()
	resp, err := t.do(c)
	if err != nil {
		t.forget(c)
	}
	return resp, err
}

// CancelRequest cancels a request given to RoundTrip: it finds the
// rewritten request now in flight for it and cancels that on the inner
// transport. A request the transport does not know (passed through, or
// already finished) is handed to the inner transport's CancelRequest as is.
func (t *Transport) CancelRequest(req *http.Request) {
	t.callsMu.Lock()
	c := t.calls[req]
	t.callsMu.Unlock()
	if c == nil {
		t.inner.CancelRequest(req)
		return
	}
	c.mu.Lock()
	c.canceled = true
	cur, cancel := c.cur, c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if cur != nil {
		t.inner.CancelRequest(cur)
	}
}

func (t *Transport) forget(c *call) {
	t.callsMu.Lock()
	if t.calls[c.orig] == c {
		delete(t.calls, c.orig)
	}
	t.callsMu.Unlock()
}

// call is one RoundTrip: the caller's request and the attempt in flight.
type call struct {
	t     *Transport
	orig  *http.Request
	class class
	cost  picker.Class // which latency estimate the call is judged by

	mu       sync.Mutex
	cur      *http.Request      // the rewritten request of the current attempt
	cancel   context.CancelFunc // cancels cur's context
	canceled bool               // CancelRequest was called
}

// begin records the attempt about to be sent; false if the caller has
// already canceled.
func (c *call) begin(r *http.Request, cancel context.CancelFunc) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.canceled {
		return false
	}
	c.cur, c.cancel = r, cancel
	return true
}

// gaveUp reports whether the caller canceled the request, by any of the
// three ways a v2 client of some vintage uses: CancelRequest, req.Cancel
// or the request's context.
func (c *call) gaveUp() bool {
	c.mu.Lock()
	canceled := c.canceled
	c.mu.Unlock()
	if canceled {
		return true
	}
	if ch := c.orig.Cancel; ch != nil {
		select {
		case <-ch:
			return true
		default:
		}
	}
	return c.orig.Context().Err() != nil
}

func (c *call) cancelErr() error {
	if err := c.orig.Context().Err(); err != nil {
		return err
	}
	return errCanceled
}

// do runs the attempts of one call: exactly one, except for reads that the
// monotonic-read guard re-issues.
func (t *Transport) do(c *call) (*http.Response, error) {
	guard := t.opts.monotonic && c.class == classRead && bodyless(c.orig)
	var (
		tried    []string // members that answered this read stale
		reissues int
		fallback bool
	)
	for {
		if len(tried) > 0 || fallback {
			if c.gaveUp() {
				return nil, c.cancelErr()
			}
		}
		cl := c.class
		if fallback {
			cl = classLeaderRead
		}
		ep, tk, err := t.pick(cl, c.cost, tried)
		if err == picker.ErrNoEligible && !fallback && len(tried) > 0 {
			// Every member has answered stale: go to the fallback.
			fallback = true
			tried = nil
			continue
		}
		if err != nil {
			return nil, err
		}
		switch {
		case fallback:
			atomic.AddUint64(&t.st.fallbacks, 1)
		case len(tried) > 0:
			atomic.AddUint64(&t.st.reissued, 1)
		}
		before := atomic.LoadUint64(&t.highest)
		resp, w, err := t.send(c, ep, tk, fallback)
		if err != nil {
			return nil, err
		}
		idx, ok := etcdIndex(resp)
		if !ok {
			w.markLast()
			return resp, nil
		}
		h := atomic.LoadUint64(&t.highest)
		if idx >= h {
			t.raise(idx)
			if c.class == classRead {
				t.fresh(ep)
			}
			w.markLast()
			return resp, nil
		}
		switch {
		case fallback || c.class == classQuorumRead:
			// A linearizable answer cannot be behind anything this
			// cluster has committed. If it is behind what was seen
			// before it was sent, that index did not come from this
			// cluster as it is now (restored from a backup, or another
			// cluster behind the same names): believe the cluster, or
			// every read would pay for the guard forever.
			if idx < before {
				atomic.CompareAndSwapUint64(&t.highest, h, idx)
			}
			w.markLast()
			return resp, nil
		case !guard:
			if c.class == classRead {
				atomic.AddUint64(&t.st.regressions, 1)
			}
			w.markLast()
			return resp, nil
		}
		// A stale read: drop it and ask elsewhere. GETs change nothing, so
		// sending one again is safe, unlike anything else.
		atomic.AddUint64(&t.st.stale, 1)
		t.noteStale(ep)
		discard(resp.Body)
		tried = append(tried, ep.key)
		if reissues < t.opts.monotonicRetries {
			reissues++
		} else {
			fallback = true
			tried = nil
		}
	}
}

// pick chooses a member for one attempt of class cl, judged by the cost
// class cost, never one of skip (endpoint keys).
func (t *Transport) pick(cl class, cost picker.Class, skip []string) (*endpoint, picker.Ticket, error) {
	r := requestFor(cl)
	r.Class = cost
	r.Skip = skip
	for i := 0; i < 3; i++ {
		tk, err := t.p.Pick(r)
		if err != nil {
			return nil, tk, err
		}
		if e := t.set().byKey[tk.Addr()]; e != nil {
			return e, tk, nil
		}
		// The set changed under the pick: pick again.
		t.p.Done(tk, picker.Outcome{Result: picker.Canceled})
	}
	return nil, picker.Ticket{}, errors.New("v2compat: endpoint set kept changing during a pick")
}

// send makes one attempt on ep: a shallow copy of the caller's request,
// so that req.Cancel, the context and every header survive, with the
// member's scheme and host. quorum turns a read into a quorum read.
func (t *Transport) send(c *call, ep *endpoint, tk picker.Ticket, quorum bool) (*http.Response, *body, error) {
	atomic.AddUint64(&t.st.attempts, 1)
	orig := c.orig
	// The context is derived from the caller's, so that it carries its
	// values and its cancellation, and can also be canceled on its own:
	// by CancelRequest, by the header timeout and once the body is done.
	ctx, cancel := context.WithCancel(orig.Context())
	r := orig.WithContext(ctx)
	u := *orig.URL
	u.Scheme, u.Host = ep.scheme, ep.host
	if quorum {
		q := u.Query()
		q.Set("quorum", "true")
		u.RawQuery = q.Encode()
	}
	r.URL = &u
	if orig.Host == "" || orig.Host == orig.URL.Host {
		r.Host = "" // the Host header follows the URL; a deliberate override stays
	}
	if !c.begin(r, cancel) {
		cancel()
		t.p.Done(tk, picker.Outcome{Result: picker.Canceled})
		return nil, nil, c.cancelErr()
	}

	start := t.p.Now()
	d := t.opts.headerTimeout
	// timer: 0 running, 1 fired (and canceled the attempt), 2 headers won.
	var timer int32
	var tm *time.Timer
	if d > 0 && t.headerTimed(c) {
		tm = time.AfterFunc(d, func() {
			if atomic.CompareAndSwapInt32(&timer, 0, 1) {
				cancel()
			}
		})
	}
	resp, err := t.inner.RoundTrip(r)
	timedOut := false
	if tm != nil {
		tm.Stop()
		timedOut = !atomic.CompareAndSwapInt32(&timer, 0, 2)
	}
	if err == nil && timedOut {
		// Headers came just as the timer canceled the attempt; the body
		// is lost with it, so this is a timeout all the same.
		resp.Body.Close()
		err = errors.New("canceled by the header timeout")
	}
	if err != nil {
		out := t.errOutcome(c, timedOut, t.p.Now()-start)
		t.p.Done(tk, out)
		cancel()
		t.judge(ep, out.Result)
		t.afterFailure(c, ep, out.Result)
		if timedOut {
			t.noteResend(c.orig, d)
			err = &HeaderTimeoutError{Endpoint: ep.scheme + "://" + ep.host, Limit: d}
		}
		return nil, nil, err
	}

	// The latency sample is the time to the headers; the ticket is handed
	// back once, when the body is done (see body), so that the request
	// counts in flight at its member until then.
	lat := t.p.Now() - start
	if lat <= 0 {
		lat = 1 // a coarse clock; Outcome.Latency must be positive to count
	}
	res := picker.OK
	if resp.StatusCode >= 500 {
		res = picker.Failed
		t.afterFailure(c, ep, res)
	}
	t.judge(ep, res)
	w := &body{rc: resp.Body, t: t, c: c, ep: ep, cancel: cancel, tk: tk, res: res, lat: lat}
	if w.rc == nil {
		w.rc = http.NoBody
	}
	resp.Body = w
	return resp, w, nil
}

// headerTimed reports whether HeaderTimeout applies to c: GETs that are
// not watches, unless the same GET timed out here within the last
// HeaderTimeout. The v2 client re-sends a failed request on the next
// member (all but Create and Delete): a write timed out here would be
// applied twice, and a List slow because the cluster is overloaded would
// be sent to every member in turn. This way a GET is sent at most twice
// because of the timeout: the re-send waits for its answer.
func (t *Transport) headerTimed(c *call) bool {
	switch c.orig.Method {
	case "", "GET", "HEAD":
	default:
		return false
	}
	if c.class == classWatch {
		return false
	}
	if atomic.LoadInt32(&t.retries) == 0 {
		return true
	}
	key := resendKey(c.orig)
	now := t.now()
	t.resentMu.Lock()
	defer t.resentMu.Unlock()
	until, ok := t.resent[key]
	if ok && now >= until {
		delete(t.resent, key)
		atomic.StoreInt32(&t.retries, int32(len(t.resent)))
		return true
	}
	return !ok
}

// noteResend remembers that r timed out, so that the client's re-send of
// it gets no header timeout, and forgets the windows that are over.
func (t *Transport) noteResend(r *http.Request, d time.Duration) {
	now := t.now()
	t.resentMu.Lock()
	defer t.resentMu.Unlock()
	for k, until := range t.resent {
		if now >= until {
			delete(t.resent, k)
		}
	}
	t.resent[resendKey(r)] = now + int64(d)
	atomic.StoreInt32(&t.retries, int32(len(t.resent)))
}

// resendKey names a request across the v2 client's re-sends, which differ
// only in the member's host.
func resendKey(r *http.Request) string { return r.URL.Path + "?" + r.URL.RawQuery }

// errOutcome classifies a failed attempt for the picker.
func (t *Transport) errOutcome(c *call, timedOut bool, elapsed time.Duration) picker.Outcome {
	d := t.opts.headerTimeout
	switch {
	case timedOut:
		return picker.Outcome{Result: picker.DeadlineExceeded, Timeout: d}
	case c.gaveUp():
		// The v2 client enforces its HeaderTimeoutPerRequest by closing
		// req.Cancel. A cancellation that comes when that timeout is due
		// is the member's fault, not the caller's choice.
		if d > 0 && c.class != classWatch && elapsed >= d-d/10 {
			return picker.Outcome{Result: picker.DeadlineExceeded, Timeout: d}
		}
		return picker.Outcome{Result: picker.Canceled}
	}
	return picker.Outcome{Result: picker.Failed}
}

// afterFailure asks for an early leader lookup when a write or anything
// sent to the leader failed: the leader may have changed.
func (t *Transport) afterFailure(c *call, ep *endpoint, r picker.Result) {
	if r != picker.Failed && r != picker.DeadlineExceeded {
		return
	}
	if c.class == classWrite || ep.key == t.leaderV.Load().(string) {
		t.kickPoll()
	}
}

// HeaderTimeoutError is returned when a member sent no response headers
// within the HeaderTimeout option.
type HeaderTimeoutError struct {
	Endpoint string        // the member's endpoint URL
	Limit    time.Duration // the HeaderTimeout in force
}

func (e *HeaderTimeoutError) Error() string {
	return "v2compat: " + e.Endpoint + " sent no response headers within " + e.Limit.String()
}

// Timeout reports true, as net.Error timeouts do.
func (e *HeaderTimeoutError) Timeout() bool { return true }

// Temporary reports true: another member may answer.
func (e *HeaderTimeoutError) Temporary() bool { return true }

// etcdIndex returns the X-Etcd-Index of an answer that is not a 5xx.
func etcdIndex(resp *http.Response) (uint64, bool) {
	if resp.StatusCode >= 500 {
		return 0, false
	}
	v := resp.Header.Get("X-Etcd-Index")
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}

func (t *Transport) raise(idx uint64) {
	for {
		h := atomic.LoadUint64(&t.highest)
		if idx <= h || atomic.CompareAndSwapUint64(&t.highest, h, idx) {
			return
		}
	}
}

// noteStale counts a stale answer from ep and marks it stale after
// staleAfter in a row.
func (t *Transport) noteStale(ep *endpoint) {
	if atomic.AddInt32(&ep.staleStreak, 1) >= staleAfter {
		_ = t.p.Mark(ep.key, tagStale, staleHold)
	}
}

// fresh records an up-to-date answer from ep, ending a stale mark.
func (t *Transport) fresh(ep *endpoint) {
	if atomic.LoadInt32(&ep.staleStreak) != 0 {
		atomic.StoreInt32(&ep.staleStreak, 0)
		_ = t.p.Mark(ep.key, tagStale, 0)
	}
}

// judge updates the "just failed" mark of ep after an answer or a failure
// with result r. ep.failed spares the answers of a healthy member the
// call into the picker; an answer racing with a failure may leave the
// mark on until it is due. A member the picker no longer has needs none.
func (t *Transport) judge(ep *endpoint, r picker.Result) {
	switch r {
	case picker.OK:
		if atomic.LoadInt32(&ep.failed) != 0 {
			atomic.StoreInt32(&ep.failed, 0)
			_ = t.p.Mark(ep.key, tagFailed, 0)
		}
	case picker.Failed, picker.DeadlineExceeded:
		atomic.StoreInt32(&ep.failed, 1)
		_ = t.p.Mark(ep.key, tagFailed, failedHold)
	}
}

func bodyless(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody
}

// discard drains a little of a body, so that its connection can be reused,
// and closes it.
func discard(rc io.ReadCloser) {
	_, _ = io.CopyN(ioutil.Discard, rc, 64<<10)
	_ = rc.Close()
}
