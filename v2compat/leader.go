package v2compat

//lint:file-ignore SA1019 io/ioutil and req.Cancel are deliberate: this file must build with Go 1.8, whose inner transports may honour only req.Cancel.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/ioutil"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// minPollGap is the shortest time between two lookups, however often an
// early one is asked for.
const minPollGap = 100 * time.Millisecond

// memberJSON is the part of a v2 members answer the lookup needs.
type memberJSON struct {
	ID         string   `json:"id"`
	ClientURLs []string `json:"clientURLs"`
}

// selfJSON is the part of GET /v2/stats/self the lookup needs.
type selfJSON struct {
	ID string `json:"id"`
}

func (t *Transport) kickPoll() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// pollLoop looks the leader up at start, then every pollInterval (with
// jitter) or sooner when asked, until Close.
func (t *Transport) pollLoop() {
	defer t.wg.Done()
	gap := minPollGap
	if t.opts.pollInterval < gap {
		gap = t.opts.pollInterval
	}
	var last time.Duration // engine time, so that a clock step cannot stretch the wait
	for {
		if last != 0 {
			if wait := gap - (t.p.Now() - last); wait > 0 && !t.sleep(wait) {
				return
			}
		}
		last = t.p.Now()
		t.pollOnce()
		tm := time.NewTimer(picker.Jitter(t.opts.pollInterval, leaderPollJitter, t.rnd))
		select {
		case <-t.ctx.Done():
			tm.Stop()
			return
		case <-t.kick:
			tm.Stop()
		case <-tm.C:
		}
	}
}

// sleep waits d; false if Close came first.
func (t *Transport) sleep(d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-t.ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// pollOnce asks one member, or a second one if the first does not answer,
// who the leader is. A member without a leader answers 503; when every
// member asked says so, the leader is forgotten. When no member answers,
// the leader is kept: if it is the one that is down, the picker's failure
// handling already steers writes elsewhere.
func (t *Transport) pollOnce() {
	atomic.AddUint64(&t.st.polls, 1)
	set := t.set()
	var tried []string
	noLeader := 0
	for i := 0; i < 2 && i < len(set.list); i++ {
		ep, tk, err := t.pick(classOther, picker.ClassPoint, tried)
		if err != nil {
			break
		}
		tried = append(tried, ep.key)
		var m memberJSON
		status, err := t.getJSON(ep, tk, "/v2/members/leader", &m)
		if err == nil {
			t.setLeader(t.endpointOf(set, m))
			return
		}
		if t.ctx.Err() != nil {
			return
		}
		if status == http.StatusServiceUnavailable {
			noLeader++
		}
	}
	if noLeader > 0 && noLeader == len(tried) {
		t.setLeader("")
		return
	}
	atomic.AddUint64(&t.st.pollErrors, 1)
}

// endpointOf finds the endpoint of member m: by its advertised client
// URLs when they are the endpoints, else by member ID, which each member
// reports in /v2/stats/self; that covers endpoints that are proxies, load
// balancer addresses or other names than the ones the members advertise.
func (t *Transport) endpointOf(set *endpointSet, m memberJSON) string {
	for _, u := range m.ClientURLs {
		if e, err := parseEndpoint(u); err == nil && set.byKey[e.key] != nil {
			return e.key
		}
	}
	if m.ID == "" {
		return ""
	}
	if k := t.keyForID(set, m.ID); k != "" {
		return k
	}
	t.probeIDs(set)
	return t.keyForID(set, m.ID)
}

func (t *Transport) keyForID(set *endpointSet, id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, v := range t.ids {
		if v == id && set.byKey[k] != nil {
			return k
		}
	}
	return ""
}

// probeIDs asks every endpoint for its member ID, all at once, and waits
// for every answer or leaderPollTimeout.
func (t *Transport) probeIDs(set *endpointSet) {
	var wg sync.WaitGroup
	for _, e := range set.list {
		tk, err := t.p.PickAddr(e.key, picker.Unary)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func(e *endpoint, tk picker.Ticket) {
			defer wg.Done()
			var s selfJSON
			if _, err := t.getJSON(e, tk, "/v2/stats/self", &s); err != nil || s.ID == "" {
				return
			}
			t.mu.Lock()
			for k, v := range t.ids {
				if v == s.ID {
					delete(t.ids, k) // a member that moved to another endpoint
				}
			}
			t.ids[e.key] = s.ID
			t.mu.Unlock()
		}(e, tk)
	}
	wg.Wait()
}

func (t *Transport) setLeader(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	set := t.set()
	if set.byKey[key] == nil {
		key = ""
	}
	if key == t.leader {
		return
	}
	t.leader = key
	t.leaderV.Store(key)
	t.tagLeaderLocked(set)
}

// getJSON sends GET path to ep on the inner transport, hands tk back with
// the outcome and decodes a 200 answer into v. It returns the status code
// of any answer.
func (t *Transport) getJSON(ep *endpoint, tk picker.Ticket, path string, v interface{}) (int, error) {
	ctx, cancel := context.WithTimeout(t.ctx, leaderPollTimeout)
	defer cancel()
	u := ep.scheme + "://" + ep.host + path
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.p.Done(tk, picker.Outcome{Result: picker.Canceled})
		return 0, err
	}
	// Both ways of canceling, for inner transports of any vintage.
	req = req.WithContext(ctx)
	req.Cancel = ctx.Done()
	resp, err := t.inner.RoundTrip(req)
	if err != nil {
		out := t.pollOutcome(ctx)
		t.p.Done(tk, out)
		t.judge(ep, out.Result)
		return 0, fmt.Errorf("v2compat: GET %s: %v", u, err)
	}
	data, err := ioutil.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	out := picker.Outcome{Result: picker.OK}
	switch {
	case err != nil:
		out = t.pollOutcome(ctx)
	case resp.StatusCode >= 500:
		out.Result = picker.Failed
	}
	t.p.Done(tk, out)
	t.judge(ep, out.Result)
	if err != nil {
		return resp.StatusCode, fmt.Errorf("v2compat: GET %s: %v", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("v2compat: GET %s: %s", u, resp.Status)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return resp.StatusCode, fmt.Errorf("v2compat: GET %s: %v", u, err)
	}
	return resp.StatusCode, nil
}

func (t *Transport) pollOutcome(ctx context.Context) picker.Outcome {
	switch {
	case t.ctx.Err() != nil:
		return picker.Outcome{Result: picker.Canceled}
	case ctx.Err() != nil:
		return picker.Outcome{Result: picker.DeadlineExceeded, Timeout: leaderPollTimeout}
	}
	return picker.Outcome{Result: picker.Failed}
}
