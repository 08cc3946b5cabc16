package v2compat

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// send makes attempt a on ep: a shallow copy of the caller's request,
// so that req.Cancel, the context and every header survive, with the
// member's scheme and host. a.quorum turns a read into a quorum read.
func (t *Transport) send(c *call, a *attempt, ep *endpoint, tk picker.Ticket) (*http.Response, *body, error) {
	atomic.AddUint64(&t.st.attempts, 1)
	orig := c.orig
	// The context is derived from the caller's, so that it carries its
	// values and its cancellation, and can also be canceled on its own:
	// by CancelRequest, by the header timeout and once the body is done.
	ctx, cancel := context.WithCancel(orig.Context())
	r := orig.WithContext(ctx)
	u := *orig.URL
	u.Scheme, u.Host = ep.scheme, ep.host
	if a.quorum {
		q := u.Query()
		q.Set("quorum", "true")
		u.RawQuery = q.Encode()
	}
	r.URL = &u
	if orig.Host == "" || orig.Host == orig.URL.Host {
		r.Host = "" // the Host header follows the URL; a deliberate override stays
	}
	if !c.begin(a, r, cancel) {
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
		out := t.errOutcome(c, a, timedOut, t.p.Now()-start)
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
	w := &body{rc: resp.Body, t: t, c: c, a: a, ep: ep, cancel: cancel, tk: tk, res: res, lat: lat}
	if w.rc == nil {
		w.rc = http.NoBody
	}
	resp.Body = w
	return resp, w, nil
}

// headerTimed reports whether WithHeaderTimeout applies to c: GETs that are
// not watches, unless the same GET timed out here within the last
// WithHeaderTimeout. The v2 client re-sends a failed request on the next
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
func (t *Transport) errOutcome(c *call, a *attempt, timedOut bool, elapsed time.Duration) picker.Outcome {
	d := t.opts.headerTimeout
	switch {
	case timedOut:
		return picker.Outcome{Result: picker.DeadlineExceeded, Timeout: d}
	case atomic.LoadInt32(&a.lost) == 1:
		// A hedged read's other attempt answered first and this one was
		// canceled: not the member's fault.
		return picker.Outcome{Result: picker.Canceled}
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

// HeaderTimeoutError is returned when a member sent no response headers
// within the WithHeaderTimeout option.
type HeaderTimeoutError struct {
	Endpoint string        // the member's endpoint URL
	Limit    time.Duration // the WithHeaderTimeout in force
}

func (e *HeaderTimeoutError) Error() string {
	return "v2compat: " + e.Endpoint + " sent no response headers within " + e.Limit.String()
}

// Timeout reports true, as net.Error timeouts do.
func (e *HeaderTimeoutError) Timeout() bool { return true }

// Temporary reports true: another member may answer.
func (e *HeaderTimeoutError) Temporary() bool { return true }
