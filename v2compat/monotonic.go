package v2compat

//lint:file-ignore SA1019 io/ioutil is deliberate: this file must build with Go 1.8.

import (
	"io"
	"io/ioutil"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// do runs the attempts of one call: exactly one, except for reads that the
// monotonic-read guard re-issues and the copies of hedged reads.
func (t *Transport) do(c *call) (*http.Response, error) {
	guard := t.opts.monotonic && c.class == classRead && bodyless(c.orig)
	hedge := t.hedges(c)
	if hedge {
		t.hedge.Earn()
	}
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
		var o outcome
		if hedge && !fallback {
			o = t.sendRead(c, ep, tk, tried)
		} else {
			resp, w, err := t.send(c, &attempt{quorum: fallback}, ep, tk)
			o = outcome{ep, resp, w, err}
		}
		if o.err != nil {
			return nil, o.err
		}
		// The guard judges the member that answered: with a hedged read,
		// maybe the copy's.
		ep, resp, w := o.ep, o.resp, o.w
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
	if n := atomic.AddInt32(&ep.staleStreak, 1); n >= staleAfter {
		_ = t.p.Mark(ep.key, tagStale, staleHold)
		if n == staleAfter { // reported once until the member answers fresh
			t.p.Emit(picker.Event{Kind: picker.EventMarkedStale, Addr: ep.key})
		}
	}
}

// fresh records an up-to-date answer from ep, ending a stale mark.
func (t *Transport) fresh(ep *endpoint) {
	if atomic.LoadInt32(&ep.staleStreak) != 0 {
		atomic.StoreInt32(&ep.staleStreak, 0)
		_ = t.p.Mark(ep.key, tagStale, 0)
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
