package etcdbalance_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// TestHedgedReads pauses one member behind its fault proxy (a GC pause:
// the connection stays up, nothing is answered) and compares a client with
// hedged reads with stock clientv3 on the same cluster. The judgement is
// by order of events, not time: every hedged serializable read is answered
// while the member is still paused, including those first sent to it (the
// copy answers and the first attempt is canceled), while the stock client,
// whose round robin sends one read in three to the paused member, is stuck
// on its first such read until the member resumes. The paused member is
// not blamed for the canceled attempts.
func TestHedgedReads(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	eps := c.Endpoints()
	// No cluster view: its probes would add picks of the paused member
	// that are not reads, and the load-only choice picks it for one read
	// in three, which is what the hedge has to save.
	// A budget of a quarter of the reads: after the warm-up the bucket
	// holds 10 tokens, and 12 reads add 3, so every one of the 12 reads
	// below can be hedged whatever the picks.
	hedged := newBalanced(t, clientConfig(eps), etcdbalance.WithHedgedReads(0.25), etcdbalance.WithClusterView(-1))
	stock := newStock(t, eps, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := hedged.Put(ctx, "hedge-key", "v")
	require.NoError(t, err)

	// Warm-up: every member gets enough answers for its p95 (16 in the
	// last 5–10 s) and the bucket fills (20 reads a token, 10 at most).
	for i := 0; i < 300; i++ {
		_, err := hedged.Get(ctx, "hedge-key", clientv3.WithSerializable())
		require.NoError(t, err)
		_, err = stock.Get(ctx, "hedge-key", clientv3.WithSerializable())
		require.NoError(t, err)
	}
	// Pause the member with the lowest estimate: the one p2c-ewma sends
	// sequential reads to, so the first read below goes there and needs its
	// copy. A canceled attempt gives no sample but keeps the member's stall
	// charge for IdleGrace (picker), so later reads mostly go elsewhere,
	// and any that go back need their copies too.
	var paused *etcdcluster.Member
	var before etcdbalance.MemberStats
	st := memberStats(t, hedged)
	for _, m := range c.Members() {
		if s := st[m.ClientAddr()]; paused == nil || s.Estimate < before.Estimate {
			paused, before = m, s
		}
	}
	addr := paused.ClientAddr()
	require.True(t, before.Picks > 16, "the member to pause has %d picks", before.Picks)

	paused.Proxy().Pause()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			paused.Proxy().Resume()
		}
	}
	defer resume()

	// The stock client: six serializable reads in turn; round robin sends
	// at least two of them to the paused member.
	var stockDone atomic.Int64
	stockEnd := make(chan error, 1)
	go func() {
		for i := 0; i < 6; i++ {
			if _, err := stock.Get(ctx, "hedge-key", clientv3.WithSerializable()); err != nil {
				stockEnd <- err
				return
			}
			stockDone.Add(1)
		}
		stockEnd <- nil
	}()

	// The hedged client: twelve reads, each answered before the member
	// resumes.
	const reads = 12
	for i := 0; i < reads; i++ {
		rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := hedged.Get(rctx, "hedge-key", clientv3.WithSerializable())
		rcancel()
		require.NoError(t, err, "hedged read %d while the member is paused", i)
	}
	hit := memberStats(t, hedged)[addr].Picks - before.Picks
	stuck := stockDone.Load()
	t.Logf("hedged: %d reads answered while paused, %d picks of the paused member; stock: %d of 6 answered", reads, hit, stuck)
	assert.Positive(t, hit, "no read or copy was sent to the paused member")
	assert.Less(t, stuck, int64(6), "stock clientv3 answered every read while a member was paused")

	resume()
	select {
	case err := <-stockEnd:
		require.NoError(t, err, "stock reads after the member resumed")
	case <-ctx.Done():
		t.Fatal("stock reads never finished after the member resumed")
	}
	after := memberStats(t, hedged)[addr]
	assert.Equal(t, before.Failures, after.Failures, "canceled first attempts were blamed on the paused member")
}
