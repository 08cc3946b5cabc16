package etcdbalance_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// memberView returns what cli's view knows of the member at addr.
func memberView(t testing.TB, cli *clientv3.Client, addr string) etcdbalance.MemberView {
	t.Helper()
	for _, m := range viewOf(t, cli).Members {
		if m.Addr == addr {
			return m
		}
	}
	return etcdbalance.MemberView{}
}

// monotonicGets returns an op doing serializable Gets of key that counts,
// in regressions, every answer whose revision is below the highest
// revision of the answers completed before it started (the reads of one
// client, in real-time order; overlapping reads are not ordered).
func monotonicGets(cli *clientv3.Client, key string, seen, regressions *atomic.Int64) func(context.Context, int64) error {
	return func(ctx context.Context, _ int64) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		floor := seen.Load()
		resp, err := cli.Get(ctx, key, clientv3.WithSerializable())
		if err != nil {
			return err
		}
		rev := resp.Header.Revision
		if rev < floor {
			regressions.Add(1)
		}
		for {
			cur := seen.Load()
			if rev <= cur || seen.CompareAndSwap(cur, rev) {
				return nil
			}
		}
	}
}

// TestLaggingMember runs on one cluster where a follower is cut off from
// its peers (Member.CutPeers) while another client keeps writing through
// the leader, so that the follower's applied index falls behind:
//
//   - lag: once the view sees it more than DefaultLagThreshold entries
//     behind, it gets no serializable read (counted at its proxy); when the
//     cut heals it catches up and gets reads again. The reader has the
//     monotonic guard off, so that only lag exclusion keeps it away;
//   - monotonic reads: with lag exclusion off, so that the stale follower
//     keeps getting reads, 10,000 serializable reads with the guard on see
//     no revision go back, while with the guard off they do (which shows
//     the test can fail; that run stops at the tenth regression).
func TestLaggingMember(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	ctx := context.Background()
	ms := c.Members()
	li, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fi, lagger := follower(t, c)
	// The writer talks to the leader alone: no view, no probes, nothing
	// through the follower that is cut off.
	writer := newStock(t, []string{ms[li].ClientAddr()}, "")
	if _, err := writer.Put(ctx, "lag/key", "v"); err != nil {
		t.Fatal(err)
	}
	// writeWhile keeps writing until the returned stop is called.
	writeWhile := func() (stop func() *result) {
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var r *result
		wg.Go(func() { r = hammer(wctx, 2, 0, putOp(writer, "lag/w")) })
		return func() *result { cancel(); wg.Wait(); return r }
	}

	t.Run("lag", func(t *testing.T) {
		reader := newBalanced(t, clientConfig(c.Endpoints()), etcdbalance.WithMonotonicReads(false))
		waitRounds(t, reader, 1)
		stopWrites := writeWhile()
		lagger.CutPeers()
		waitFor(t, 60*time.Second, "the view to see the cut follower lagging", func() bool {
			return memberView(t, reader, lagger.ClientAddr()).Lagging
		})
		t.Logf("lagging: %+v", memberView(t, reader, lagger.ClientAddr()))
		before := settledRequests(t, ms, reader)
		if r := hammer(ctx, 16, 3000, getOp(reader, "lag/key", serializable)); r.fail.Load() != 0 {
			t.Fatalf("reads failed: %v", r)
		}
		d := sub(settledRequests(t, ms, reader), before)
		t.Logf("3000 serializable reads while member %d lags reached the members %v (leader %d)", fi, d, li)
		if d[fi] != 0 {
			t.Errorf("the lagging member got %d serializable reads", d[fi])
		}

		lagger.MendPeers()
		waitFor(t, 60*time.Second, "the healed follower to catch up", func() bool {
			m := memberView(t, reader, lagger.ClientAddr())
			return m.Verified && !m.Lagging
		})
		if r := stopWrites(); r.ok.Load() == 0 {
			t.Fatalf("no write succeeded: %v", r)
		}
		t.Logf("caught up: %+v", memberView(t, reader, lagger.ClientAddr()))
		hammer(ctx, 16, 500, getOp(reader, "lag/key", serializable))
		before = requests(t, ms, reader)
		if r := hammer(ctx, 16, 3000, getOp(reader, "lag/key", serializable)); r.fail.Load() != 0 {
			t.Fatalf("reads failed: %v", r)
		}
		d = sub(requests(t, ms, reader), before)
		t.Logf("3000 serializable reads after the heal reached the members %v", d)
		if d[fi] < 300 {
			t.Errorf("the healed member got %d of 3000 reads, want ≥ 10%%", d[fi])
		}
	})

	t.Run("monotonic reads", func(t *testing.T) {
		const reads = 10000
		guarded := newBalanced(t, clientConfig(c.Endpoints()), etcdbalance.WithLagThreshold(-1))
		unguarded := newBalanced(t, clientConfig(c.Endpoints()), etcdbalance.WithLagThreshold(-1), etcdbalance.WithMonotonicReads(false))
		waitRounds(t, guarded, 1)
		waitRounds(t, unguarded, 1)
		stopWrites := writeWhile()
		defer stopWrites()
		lagger.CutPeers()
		defer lagger.MendPeers()
		// Let the follower fall behind by some writes.
		rev0 := memberView(t, guarded, lagger.ClientAddr()).Revision
		waitFor(t, 60*time.Second, "writes past the cut follower", func() bool {
			resp, err := writer.Get(ctx, "lag/key")
			return err == nil && resp.Header.Revision > rev0+100
		})

		// run reads until reads are done, or until stopAt regressions.
		run := func(name string, cli *clientv3.Client, stopAt int64) int64 {
			var seen, regressions atomic.Int64
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			get := monotonicGets(cli, "lag/key", &seen, &regressions)
			start := time.Now()
			r := hammer(rctx, 16, reads, func(ctx context.Context, i int64) error {
				err := get(ctx, i)
				if regressions.Load() >= stopAt {
					cancel()
				}
				return err
			})
			if r.fail.Load() != 0 {
				t.Errorf("%s: reads failed: %v", name, r)
			}
			st, _ := etcdbalance.Stats(cli)
			vv := viewOf(t, cli)
			t.Logf("%s: %d serializable reads in %v, %d went back in revision; guard %+v%s\nview leader %q, members %+v",
				name, r.total(), time.Since(start).Round(time.Millisecond), regressions.Load(), vv.Guard, formatStats(st), vv.Leader, vv.Members)
			return regressions.Load()
		}
		if n := run("guard on", guarded, reads+1); n != 0 {
			t.Errorf("with the monotonic guard on, %d reads went back in revision", n)
		}
		if g := viewOf(t, guarded).Guard; g.Stale == 0 {
			t.Errorf("the guard never saw a stale answer (%+v): the setup did not test it", g)
		}
		if n := run("guard off", unguarded, 10); n == 0 {
			t.Errorf("with the guard off and a stale member serving reads, no read went back: the test cannot fail")
		}
	})
}
