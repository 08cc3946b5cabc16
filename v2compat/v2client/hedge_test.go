package v2client_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/client/v2"

	"github.com/etcdbalance/etcdbalance-go/internal/v2cluster"
	"github.com/etcdbalance/etcdbalance-go/picker"
	"github.com/etcdbalance/etcdbalance-go/v2compat"
)

// TestHedgedReads pauses one member behind its fault proxy (a GC pause: the
// connections stay up, nothing is answered) and compares a client with
// hedged reads with the stock v2 client pinned to that member. The
// judgement is by order of events, not time: with no header timeout, a
// read that reaches the paused member is answered only by its copy, yet
// every hedged read is answered while the member is still paused, while
// the stock client, which has connected to it, has answered nothing. The
// paused member is not blamed for the canceled first attempts.
func TestHedgedReads(t *testing.T) {
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3})
	// No leader poll: it would send lookups to the paused member, which
	// time out and are blamed on it. A budget of 1: each read earns the
	// token its copy may spend, so every read below can be hedged however
	// many copies the warm-up sent (a smaller budget runs out when the
	// paused member gets more first attempts than the bucket holds).
	kapi, c := balanced(t, cl, client.Config{}, v2compat.WithHedgedReads(1), v2compat.WithLeaderPollInterval(-1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := kapi.Set(ctx, "/hedge", "v", nil)
	require.NoError(t, err)
	require.NoError(t, cl.WaitSynced(ctx))

	// Warm-up: every member gets enough answers for its p95 (16 in the
	// last 5–10 s).
	for i := 0; i < 300; i++ {
		_, err := kapi.Get(ctx, "/hedge", nil)
		require.NoError(t, err)
	}
	// Pause the member with the lowest estimate: the one p2c-ewma prefers,
	// so the first read goes there and needs its copy. A canceled attempt
	// gives no sample but keeps the member's stall charge for IdleGrace
	// (picker), so later reads mostly go elsewhere, and any that go back
	// need their copies too.
	view := func() map[string]picker.EndpointStats {
		out := make(map[string]picker.EndpointStats)
		for _, s := range c.Transport().Stats().Members {
			out[s.Addr] = s
		}
		return out
	}
	var paused *v2cluster.Member
	var before picker.EndpointStats
	st := view()
	for _, m := range cl.Members() {
		if s := st[strings.ToLower(m.URL())]; paused == nil || s.Estimate < before.Estimate {
			paused, before = m, s
		}
	}
	require.Greater(t, before.Picks, int64(16), "the member to pause has too few answers for a p95")
	hedgedBefore := c.Transport().Stats()

	// The stock client, pinned to the member about to be paused.
	skapi := stock(t, cl, client.Config{}, paused.URL())
	paused.Proxy().Pause()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			paused.Proxy().Resume()
		}
	}
	defer resume()
	accepted := paused.Proxy().Stats().Accepted
	var stockDone int64
	stockEnd := make(chan error, 1)
	go func() {
		for i := 0; i < 6; i++ {
			if _, err := skapi.Get(ctx, "/hedge", nil); err != nil {
				stockEnd <- err
				return
			}
			atomic.AddInt64(&stockDone, 1)
		}
		stockEnd <- nil
	}()
	// The stock client's first read has its connection to the paused
	// member (the stock client is fresh: it has to dial).
	deadline := time.Now().Add(10 * time.Second)
	for paused.Proxy().Stats().Accepted == accepted {
		require.True(t, time.Now().Before(deadline), "the stock client never connected to the paused member")
		time.Sleep(5 * time.Millisecond)
	}

	const reads = 12
	for i := 0; i < reads; i++ {
		rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := kapi.Get(rctx, "/hedge", nil)
		rcancel()
		if err != nil {
			st := c.Transport().Stats()
			t.Logf("copies %d, won %d", st.Hedged-hedgedBefore.Hedged, st.HedgeWins-hedgedBefore.HedgeWins)
			for _, s := range st.Members {
				t.Logf("%s: picks %d, in flight %d, failures %d, tags %b, estimate %v", s.Addr, s.Picks, s.InFlight, s.Failures, s.Tags, s.Estimate)
			}
		}
		require.NoError(t, err, "hedged read %d while the member is paused", i)
	}
	after := c.Transport().Stats()
	hit := view()[strings.ToLower(paused.URL())].Picks - before.Picks
	stuck := atomic.LoadInt64(&stockDone)
	t.Logf("hedged: %d reads answered while m%d was paused, %d picks of it, %d copies, %d won; stock: %d of 6 answered",
		reads, paused.Index(), hit, after.Hedged-hedgedBefore.Hedged, after.HedgeWins-hedgedBefore.HedgeWins, stuck)
	assert.Positive(t, hit, "no read was sent to the paused member")
	assert.Positive(t, after.HedgeWins-hedgedBefore.HedgeWins, "no copy answered a read")
	assert.Zero(t, stuck, "the stock client answered a read while its member was paused")

	resume()
	select {
	case err := <-stockEnd:
		require.NoError(t, err, "stock reads after the member resumed")
	case <-ctx.Done():
		t.Fatal("stock reads never finished after the member resumed")
	}
	assert.Equal(t, before.Failures, view()[strings.ToLower(paused.URL())].Failures, "canceled first attempts were blamed on the paused member")
}
