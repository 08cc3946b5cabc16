package v2compat

import (
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdbalance/etcdbalance-go/internal/v2cluster"
	"github.com/etcdbalance/etcdbalance-go/picker"
)

// stepClock is a picker.Clock that moves only when told.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// The "just failed" mark runs on the engine's time, from the injected
// clock: it holds while that clock stands still, and a step of an hour
// either way ends it at the next request instead of stretching it by the
// step (before, the marks ran on time.Since, which under Go 1.8 follows
// every NTP step).
func TestDownMarkBoundedUnderClockSteps(t *testing.T) {
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3})
	fc := &stepClock{t: time.Unix(1700000000, 0)}
	inner := &http.Transport{}
	t.Cleanup(inner.CloseIdleConnections)
	tr, err := New(inner, cl.Endpoints(), WithLeaderPollInterval(-1),
		WithPickerConfig(picker.Config{Clock: fc, Rand: picker.NewSource(7)}))
	require.NoError(t, err)
	defer tr.Close()
	url := cl.Endpoints()[1] + "/v2/keys/steps"
	bad := cl.Member(0)
	badKey := canonicalKey("http", bad.URL()[len("http://"):])
	down := func() bool {
		for _, s := range tr.Stats().Members {
			if s.Addr == badKey {
				return s.Tags&tagFailed != 0
			}
		}
		t.Fatalf("no endpoint %s", badKey)
		return false
	}
	get := func() error {
		req, err := http.NewRequest("GET", url, nil)
		require.NoError(t, err)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}

	for _, step := range []time.Duration{-time.Hour, time.Hour} {
		fc.Advance(10 * time.Second) // past any slow start: the member is picked as often as the others
		bad.Proxy().RefuseNew(true)
		bad.Proxy().ResetAll()
		inner.CloseIdleConnections()
		failed := false
		for i := 0; i < 500 && !failed; i++ {
			failed = get() != nil
		}
		require.True(t, failed, "no request reached the refusing member")
		require.True(t, down(), "a failed member was not marked")
		for i := 0; i < 20; i++ {
			require.NoError(t, get())
		}
		require.True(t, down(), "the mark ended while the clock stood still")

		bad.Proxy().RefuseNew(false)
		fc.Advance(step)
		// Nothing has answered from the member since it failed: only the
		// step can end the mark (the request below goes to it only if the
		// mark has ended already, the others being cheap).
		require.NoError(t, get())
		require.False(t, down(), "the mark outlived a clock step of %v", step)
	}
	for _, s := range tr.Stats().Members {
		require.True(t, s.Estimate > 0 && s.Estimate <= time.Minute, "%s: estimate %v", s.Addr, s.Estimate)
	}
}
