package v2compat

//lint:file-ignore SA1019 req.Cancel is deliberate: every v2 client of any vintage cancels through it.

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// errCanceled is returned when the caller gave up between two attempts of
// one read and its context has no error of its own (req.Cancel was closed).
var errCanceled = errors.New("v2compat: request canceled")

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
	live := c.live
	c.mu.Unlock()
	for _, a := range live {
		if a != nil && a.cancel != nil {
			a.cancel()
			t.inner.CancelRequest(a.r)
		}
	}
}

func (t *Transport) forget(c *call) {
	t.callsMu.Lock()
	if t.calls[c.orig] == c {
		delete(t.calls, c.orig)
	}
	t.callsMu.Unlock()
}

// call is one RoundTrip: the caller's request and the attempts in flight.
type call struct {
	t     *Transport
	orig  *http.Request
	class class
	cost  picker.Class // which latency estimate the call is judged by

	mu       sync.Mutex
	live     [2]*attempt // the current attempt and, for a hedged read, its copy
	canceled bool        // CancelRequest was called
}

// attempt is one request sent to a member for a call.
type attempt struct {
	quorum bool  // sent as a quorum read (the guard's fallback)
	copy   bool  // a hedged read's copy, sent beside the current attempt
	lost   int32 // atomic: 1 once the other attempt of a hedged read won

	// Guarded by call.mu.
	r      *http.Request      // the rewritten request
	cancel context.CancelFunc // cancels r's context
}

// begin records attempt a, about to be sent as r; false if the caller has
// already canceled or a has already lost.
func (c *call) begin(a *attempt, r *http.Request, cancel context.CancelFunc) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.canceled || atomic.LoadInt32(&a.lost) == 1 {
		return false
	}
	a.r, a.cancel = r, cancel
	slot := 0
	if a.copy {
		slot = 1
	}
	c.live[slot] = a
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

// pick chooses a member for one attempt of class cl, judged by the cost
// class cost, never one of skip (endpoint keys).
func (t *Transport) pick(cl class, cost picker.Class, skip []string) (*endpoint, picker.Ticket, error) {
	r := requestFor(cl)
	r.Class = cost
	r.Skip = skip
	return t.pickFor(r)
}

// pickFor chooses a member for r.
func (t *Transport) pickFor(r picker.Request) (*endpoint, picker.Ticket, error) {
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
