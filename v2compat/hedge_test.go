package v2compat

//lint:file-ignore SA1019 req.Cancel is how every v2 client cancels; a test checks it reaches both attempts.

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

func TestHedgeOptionValidation(t *testing.T) {
	for _, c := range []struct {
		budget float64
		want   string
	}{{2, "budget 2 must be in [0, 1]"}, {-0.1, "budget -0.1 must"}, {math.NaN(), "budget NaN must"}, {math.Inf(1), "budget +Inf must"}} {
		_, err := New(&http.Transport{}, []string{"http://127.0.0.1:1"}, WithHedgedReads(c.budget), WithLeaderPollInterval(-1))
		require.Error(t, err, "budget %v", c.budget)
		assert.True(t, strings.HasPrefix(err.Error(), "v2compat: ") && strings.Contains(err.Error(), c.want), "budget %v: %v", c.budget, err)
	}
	for _, ok := range []float64{0, 0.05, 1} {
		tr, err := New(&http.Transport{}, []string{"http://127.0.0.1:1"}, WithHedgedReads(ok), WithLeaderPollInterval(-1))
		require.NoError(t, err, "budget %v", ok)
		assert.Equal(t, ok > 0, tr.hedge != nil, "budget %v: hedging on", ok)
		tr.Close()
	}
}

// TestHedgeOnlyReads: only reads served from a member's own store are
// hedged; writes, quorum reads, watches, other paths and requests with a
// body never are, nor anything when hedging is off.
func TestHedgeOnlyReads(t *testing.T) {
	on, err := New(&http.Transport{}, []string{"http://127.0.0.1:1"}, WithHedgedReads(0.05), WithLeaderPollInterval(-1))
	require.NoError(t, err)
	defer on.Close()
	off, err := New(&http.Transport{}, []string{"http://127.0.0.1:1"}, WithLeaderPollInterval(-1))
	require.NoError(t, err)
	defer off.Close()
	for _, c := range []struct {
		method, url string
		body        bool
		want        bool
	}{
		{"GET", "/v2/keys/a", false, true},
		{"GET", "/v2/keys/dir?recursive=true&sorted=true", false, true},
		{"HEAD", "/v2/keys/a", false, true},
		{"GET", "/v2/keys/a?quorum=true", false, false},
		{"GET", "/v2/keys/a?wait=true", false, false},
		{"GET", "/v2/keys/a?wait=true&waitIndex=7", false, false},
		{"GET", "/v2/keys/a", true, false},
		{"PUT", "/v2/keys/a", true, false},
		{"POST", "/v2/keys/q", true, false},
		{"DELETE", "/v2/keys/a", false, false},
		{"GET", "/v2/members", false, false},
		{"GET", "/version", false, false},
	} {
		var b *strings.Reader
		req, err := http.NewRequest(c.method, "http://127.0.0.1:1"+c.url, nil)
		if c.body {
			b = strings.NewReader("value=v")
			req, err = http.NewRequest(c.method, "http://127.0.0.1:1"+c.url, b)
		}
		require.NoError(t, err)
		cl := classify(req)
		assert.Equal(t, c.want, on.hedges(&call{orig: req, class: cl}), "%s %s body %v", c.method, c.url, c.body)
		assert.False(t, off.hedges(&call{orig: req, class: cl}), "hedging off: %s %s", c.method, c.url)
	}
}

// minSamples is the fewest answers picker.Picker.Quantile gives a p95 from.
const minSamples = 16

// hedgeTransport is a transport with hedging over n fake members, pinned
// to one of them (pin), as the stock client is, so that the first attempt
// of every read goes there and its copy, which skips that member, goes to
// another; no leader poll; enough answers from pin for its p95.
func hedgeTransport(t *testing.T, n int) (tr *Transport, c *fakeCluster, pin int) {
	t.Helper()
	// A budget of 1: every read earns a whole token.
	return hedgeTransportBudget(t, n, 1)
}

func hedgeTransportBudget(t *testing.T, n int, budget float64) (tr *Transport, c *fakeCluster, pin int) {
	t.Helper()
	c = newFakeCluster(t, n)
	tr, _ = newTestTransport(t, c, WithHedgedReads(budget), WithLeaderPollInterval(-1),
		WithPickerConfig(picker.Config{Policy: picker.Pinned}))
	for i := 0; i < 2*minSamples; i++ {
		code, _ := get(t, tr, c.members[0].srv.URL+"/v2/keys/warm")
		require.Equal(t, http.StatusOK, code)
	}
	pin = -1
	for i, m := range c.members {
		if stats(tr, strings.ToLower(m.srv.URL)).Picks >= 2*minSamples {
			pin = i
		}
	}
	require.NotEqual(t, -1, pin, "no member got every warm-up read")
	return tr, c, pin
}

// testKey is the key the hedging tests read; the warm-up reads others,
// whose copies may still arrive.
const testKey = "/v2/keys/hedged"

// setHandlers gives every member of c the handler h for testKey, told
// which member it runs at; other keys are answered at index 10.
func setHandlers(c *fakeCluster, h func(i int, w http.ResponseWriter, r *http.Request)) {
	for i, m := range c.members {
		i := i
		m.handler.Store(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != testKey {
				answer(w, r, 10)
				return
			}
			h(i, w, r)
		}))
	}
}

// answer writes a read's answer at index idx.
func answer(w http.ResponseWriter, r *http.Request, idx uint64) {
	w.Header().Set("X-Etcd-Index", fmt.Sprint(idx))
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"action":"get","node":{"key":%q,"value":"v","modifiedIndex":%d}}`, r.URL.Path, idx)
}

// failures is the blamed failures of every member.
func failures(tr *Transport) int64 {
	var n int64
	for _, s := range tr.Stats().Members {
		n += s.Failures
	}
	return n
}

// waitClosed waits up to 5 s for ch to close.
func waitClosed(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestHedgedReadCopyWins: the member the read goes to first does not answer
// (a GC pause); the copy, sent after that member's p95, answers, and the
// first attempt is canceled without blame.
func TestHedgedReadCopyWins(t *testing.T) {
	tr, c, pin := hedgeTransport(t, 2)
	before := tr.Stats()
	firstCanceled := make(chan struct{})
	setHandlers(c, func(i int, w http.ResponseWriter, r *http.Request) {
		if i == pin {
			<-r.Context().Done()
			close(firstCanceled)
			return
		}
		answer(w, r, 20)
	})
	code, idx := get(t, tr, c.members[0].srv.URL+testKey)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, uint64(20), idx, "the copy's answer")
	waitClosed(t, firstCanceled, "the first attempt's cancellation at its member")

	st := tr.Stats()
	assert.Equal(t, uint64(1), st.Hedged-before.Hedged, "copies")
	assert.Equal(t, uint64(1), st.HedgeWins-before.HedgeWins, "copies that won")
	assert.Equal(t, uint64(2), st.Attempts-before.Attempts, "attempts")
	assert.Equal(t, failures(tr), int64(0), "the canceled first attempt was blamed")
	for _, s := range st.Members {
		assert.Zero(t, s.InFlight, "%s: tickets not handed back", s.Addr)
	}
}

// TestHedgedReadFirstWins: the first attempt answers once the copy has
// reached the other member; the copy is canceled without blame.
func TestHedgedReadFirstWins(t *testing.T) {
	tr, c, pin := hedgeTransport(t, 2)
	before := tr.Stats()
	copyArrived, copyCanceled := make(chan struct{}), make(chan struct{})
	setHandlers(c, func(i int, w http.ResponseWriter, r *http.Request) {
		if i == pin {
			select {
			case <-copyArrived:
			case <-r.Context().Done():
				return
			}
			answer(w, r, 30)
			return
		}
		close(copyArrived)
		<-r.Context().Done()
		close(copyCanceled)
	})
	code, idx := get(t, tr, c.members[0].srv.URL+testKey)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, uint64(30), idx, "the first attempt's answer")
	waitClosed(t, copyCanceled, "the copy's cancellation at its member")

	st := tr.Stats()
	assert.Equal(t, uint64(1), st.Hedged-before.Hedged, "copies")
	assert.Zero(t, st.HedgeWins-before.HedgeWins, "copies that won")
	assert.Equal(t, failures(tr), int64(0), "the canceled copy was blamed")
	waitFor(t, "every ticket handed back", func() bool {
		for _, s := range tr.Stats().Members {
			if s.InFlight != 0 {
				return false
			}
		}
		return true
	})
}

// TestHedgedReadFailureLosesToAnswer: a first attempt that fails with a
// 5xx after the copy was sent does not win; the copy's answer does.
func TestHedgedReadFailureLosesToAnswer(t *testing.T) {
	tr, c, pin := hedgeTransport(t, 2)
	before := tr.Stats()
	copyArrived := make(chan struct{})
	// judged: the transport has seen the first attempt's 5xx (it marks
	// the member just failed at the headers).
	judged := func() bool {
		for _, s := range tr.Stats().Members {
			if s.Tags&tagFailed != 0 {
				return true
			}
		}
		return false
	}
	setHandlers(c, func(i int, w http.ResponseWriter, r *http.Request) {
		if i == pin {
			select {
			case <-copyArrived:
			case <-r.Context().Done():
				return
			}
			http.Error(w, `{"message":"overloaded"}`, http.StatusServiceUnavailable)
			return
		}
		close(copyArrived)
		deadline := time.Now().Add(5 * time.Second)
		for !judged() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		answer(w, r, 40)
	})
	code, idx := get(t, tr, c.members[0].srv.URL+testKey)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, uint64(40), idx, "the copy's answer")
	st := tr.Stats()
	assert.Equal(t, uint64(1), st.HedgeWins-before.HedgeWins, "copies that won")
	assert.Equal(t, int64(1), failures(tr), "the 5xx is the member's failure")
}

// TestHedgedReadCanceled: a caller that gives up cancels both attempts,
// with CancelRequest (as old v2 clients do) or req.Cancel, and neither
// member is blamed.
func TestHedgedReadCanceled(t *testing.T) {
	for _, how := range []string{"CancelRequest", "req.Cancel", "context"} {
		t.Run(how, func(t *testing.T) {
			tr, c, _ := hedgeTransport(t, 2)
			before := tr.Stats()
			var arrivals, canceled int32
			both := make(chan struct{})
			setHandlers(c, func(_ int, w http.ResponseWriter, r *http.Request) {
				if atomic.AddInt32(&arrivals, 1) == 2 {
					close(both)
				}
				<-r.Context().Done()
				atomic.AddInt32(&canceled, 1)
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequest("GET", c.members[0].srv.URL+testKey, nil)
			require.NoError(t, err)
			req = req.WithContext(ctx)
			cancelCh := make(chan struct{})
			req.Cancel = cancelCh
			errc := make(chan error, 1)
			go func() {
				resp, err := tr.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			waitClosed(t, both, "the copy")
			switch how {
			case "CancelRequest":
				tr.CancelRequest(req)
			case "req.Cancel":
				close(cancelCh)
			default:
				cancel()
			}
			select {
			case err := <-errc:
				assert.Error(t, err)
			case <-time.After(5 * time.Second):
				t.Fatal("RoundTrip did not return after the caller gave up")
			}
			waitFor(t, "both attempts canceled at their members", func() bool { return atomic.LoadInt32(&canceled) == 2 })
			assert.Equal(t, uint64(1), tr.Stats().Hedged-before.Hedged)
			assert.Zero(t, failures(tr), "a member was blamed for the caller's cancellation")
		})
	}
}

// TestHedgedReadGuard: the monotonic-read guard checks the answer that
// wins: a copy's stale answer is not returned but re-issued elsewhere.
func TestHedgedReadGuard(t *testing.T) {
	tr, c, pin := hedgeTransport(t, 3)
	// Something at index 50 has been seen.
	for _, m := range c.members {
		m.handler.Store(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { answer(w, r, 50) }))
	}
	get(t, tr, c.members[0].srv.URL+"/v2/keys/seen")
	before := tr.Stats()

	// The pinned member does not answer; the first other member to get
	// the read (the copy) answers stale, the third (the copy of the
	// guard's re-issue, which goes to the pinned member again) fresh.
	var others int32
	setHandlers(c, func(i int, w http.ResponseWriter, r *http.Request) {
		if i == pin {
			<-r.Context().Done()
			return
		}
		if atomic.AddInt32(&others, 1) == 1 {
			answer(w, r, 45)
			return
		}
		answer(w, r, 55)
	})
	code, idx := get(t, tr, c.members[0].srv.URL+testKey)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, uint64(55), idx, "the guard's re-issue")
	st := tr.Stats()
	assert.Equal(t, uint64(1), st.StaleAnswers-before.StaleAnswers, "the copy's stale answer")
	assert.Equal(t, uint64(1), st.Reissued-before.Reissued)
	assert.Equal(t, uint64(2), st.Hedged-before.Hedged, "copies")
	assert.Equal(t, uint64(2), st.HedgeWins-before.HedgeWins, "copies that won")
	assert.Zero(t, failures(tr), "a canceled attempt was blamed")
}

// TestHedgedReadNoCopy: a read whose member takes 50 ms (far above its
// p95) gets a copy, which answers first; the same slow answer gets none for
// a quorum read, a watch, a write, with an empty bucket, or from a member
// without a p95.
func TestHedgedReadNoCopy(t *testing.T) {
	slow := func(pin int) func(i int, w http.ResponseWriter, r *http.Request) {
		return func(i int, w http.ResponseWriter, r *http.Request) {
			if i == pin {
				time.Sleep(50 * time.Millisecond) // the member's service time, not a wait for a condition
			}
			answer(w, r, 60)
		}
	}
	for _, c := range []struct {
		name, method, query string
		empty, cold         bool
		copies              uint64
	}{
		{name: "read", method: "GET", copies: 1},
		{name: "quorum read", method: "GET", query: "?quorum=true"},
		{name: "watch", method: "GET", query: "?wait=true"},
		{name: "write", method: "PUT"},
		{name: "empty bucket", method: "GET", empty: true},
		{name: "no p95", method: "GET", cold: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var tr *Transport
			var fc *fakeCluster
			pin := 0
			if c.cold {
				fc = newFakeCluster(t, 2)
				tr, _ = newTestTransport(t, fc, WithHedgedReads(1), WithLeaderPollInterval(-1),
					WithPickerConfig(picker.Config{Policy: picker.Pinned}))
				pin = -1 // the member pinned is unknown: both are slow
			} else if c.empty {
				// The warm-up and the read earn 33 millionths of a token.
				tr, fc, pin = hedgeTransportBudget(t, 2, 1e-6)
			} else {
				tr, fc, pin = hedgeTransport(t, 2)
			}
			if pin >= 0 {
				setHandlers(fc, slow(pin))
			} else {
				setHandlers(fc, func(i int, w http.ResponseWriter, r *http.Request) {
					time.Sleep(50 * time.Millisecond) // service time
					answer(w, r, 60)
				})
			}
			before := tr.Stats().Hedged
			resp := do(t, tr, c.method, fc.members[0].srv.URL+testKey+c.query)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, c.copies, tr.Stats().Hedged-before, "copies")
		})
	}
}
