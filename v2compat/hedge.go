package v2compat

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// hedgeQuantile is the share of a member's recent answers that may come
// before the copy of a hedged read is sent (see WithHedgedReads), after
// "The Tail at Scale" (Dean and Barroso), as in package etcdbalance.
const hedgeQuantile = 0.95

// WithHedgedReads hedges reads: a GET under /v2/keys without quorum=true
// or wait=true that has had no response headers after its member's p95
// (picker.Picker.Quantile, over the member's answers of the last 5 to 10 s)
// is sent once more, to another member; the first answer wins and the
// other attempt is canceled, which is not blamed on its member. Within a
// budget (picker.Budget): each read earns budget of a token, up to 10 tokens, and each copy
// spends one, so copies never exceed budget of the reads (plus the 10 saved
// up), and hedging cannot feed an overload. budget must be in [0, 1]; 0,
// the default, turns hedging off; 0.05, the usual choice, adds at most 5%.
// Never hedged: writes, quorum reads, watches, requests with a body, and
// the guard's quorum fallback. The copy avoids members marked stale or just
// failed, like any read, and the monotonic-read guard checks the answer
// that wins. Stats.Hedged and Stats.HedgeWins count the copies.
func WithHedgedReads(budget float64) Option {
	return func(o *options) error {
		b, err := picker.NewBudget(budget)
		if err != nil {
			return fmt.Errorf("v2compat: hedged reads: %v", err)
		}
		o.hedge = b
		return nil
	}
}

// hedges reports whether c is a read to hedge: a GET (or HEAD) under
// /v2/keys, neither a quorum read nor a watch, without a body, when the
// transport hedges reads.
func (t *Transport) hedges(c *call) bool {
	return t.hedge != nil && c.class == classRead && bodyless(c.orig)
}

// Which attempt of a hedged read won.
const (
	wonNone = iota
	wonFirst
	wonCopy
)

// outcome is what one attempt of a read brought back.
type outcome struct {
	ep   *endpoint
	resp *http.Response
	w    *body
	err  error
}

// good reports whether o is an answer that can win: headers, not a 5xx.
func (o outcome) good() bool { return o.err == nil && o.resp.StatusCode < 500 }

// drop closes the answer of an attempt that lost. Closing before any read
// ends its body as the member having answered (see body.end).
func (o outcome) drop() {
	if o.resp != nil {
		_ = o.resp.Body.Close()
	}
}

// hedgedRead is one attempt of a read and, if its time comes, its copy.
// The first attempt runs on the caller's goroutine, the copy on its
// timer's; whichever answers first wins and the other is canceled.
type hedgedRead struct {
	t     *Transport
	c     *call
	first *attempt
	skip  []string // members the copy must not go to

	mu     sync.Mutex
	over   bool // the first attempt has returned: no copy any more
	sent   bool
	winner int
	copy   *attempt
	done   chan outcome // the copy's outcome, unless the first attempt won
}

// sendRead sends one attempt of a read to ep with ticket tk and, when the
// transport hedges and the member has a p95, arms the copy. tried are the
// members that already answered this read stale. It returns the winning
// outcome: the member that answered, for the guard.
func (t *Transport) sendRead(c *call, ep *endpoint, tk picker.Ticket, tried []string) outcome {
	a := &attempt{}
	d, ok := t.p.Quantile(tk, hedgeQuantile)
	if !ok {
		resp, w, err := t.send(c, a, ep, tk)
		return outcome{ep, resp, w, err}
	}
	h := &hedgedRead{t: t, c: c, first: a, skip: append(append([]string(nil), tried...), ep.key)}
	tm := time.AfterFunc(d, h.fire)
	resp, w, err := t.send(c, a, ep, tk)
	tm.Stop()
	return h.finish(outcome{ep, resp, w, err})
}

// fire sends the copy, if the first attempt is still waiting, the caller
// has not given up, the budget allows and another member is eligible.
func (h *hedgedRead) fire() {
	t := h.t
	h.mu.Lock()
	if h.over || h.sent || h.c.gaveUp() || !t.hedge.Spend() {
		h.mu.Unlock()
		return
	}
	r := requestFor(classRead)
	r.Class, r.Skip = h.c.cost, h.skip
	// A copy is worth sending only to a member that is neither stale nor
	// just failed: Exclude, where a read would merely avoid them.
	r.Exclude, r.Avoid = r.Avoid, 0
	ep, tk, err := t.pickFor(r)
	if err != nil {
		h.mu.Unlock()
		t.hedge.Refund()
		return
	}
	h.sent, h.copy, h.done = true, &attempt{copy: true}, make(chan outcome, 1)
	a := h.copy
	// Counted before finish can see it sent: once the read returns, its
	// copy is in Stats.
	atomic.AddUint64(&t.st.hedged, 1)
	h.mu.Unlock()

	resp, w, err := t.send(h.c, a, ep, tk)
	o := outcome{ep, resp, w, err}
	h.mu.Lock()
	if o.good() && h.winner == wonNone {
		h.winner = wonCopy
	}
	winner := h.winner
	h.mu.Unlock()
	switch winner {
	case wonFirst:
		o.drop()
		return
	case wonCopy:
		t.lose(h.c, h.first)
	}
	h.done <- o
}

// finish is called with the first attempt's outcome and returns the one
// that wins: the first that answered, or the first attempt's when neither
// did.
func (h *hedgedRead) finish(first outcome) outcome {
	h.mu.Lock()
	h.over = true
	if first.good() && h.winner == wonNone {
		h.winner = wonFirst
	}
	winner, sent, cp, done := h.winner, h.sent, h.copy, h.done
	h.mu.Unlock()
	if !sent {
		return first
	}
	if winner == wonFirst {
		h.t.lose(h.c, cp)
		return first
	}
	second := <-done // bounded: the copy's request ends with the call's
	if second.good() {
		first.drop()
		atomic.AddUint64(&h.t.st.hedgeWins, 1)
		return second
	}
	second.drop()
	return first
}

// lose cancels attempt a, which lost the race: its member is not blamed.
func (t *Transport) lose(c *call, a *attempt) {
	atomic.StoreInt32(&a.lost, 1)
	c.mu.Lock()
	r, cancel := a.r, a.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		t.inner.CancelRequest(r)
	}
}
