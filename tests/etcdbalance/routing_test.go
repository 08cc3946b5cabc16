package etcdbalance_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// putOp writes key/i with its own timeout.
func putOp(cli *clientv3.Client, prefix string) func(context.Context, int64) error {
	return func(ctx context.Context, i int64) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := cli.Put(ctx, fmt.Sprintf("%s/%d", prefix, i), "v")
		return err
	}
}

// indexOf returns the index in ms of the member with client address addr.
func indexOf(ms []*etcdcluster.Member, addr string) int {
	return slices.IndexFunc(ms, func(m *etcdcluster.Member) bool { return m.ClientAddr() == addr })
}

// leaderChange are the errors etcd gives writes while leadership moves.
var leaderChange = []string{"leader changed", "no leader", "raft proposal dropped"}

// TestClusterRouting runs on one cluster of 3 voters and a learner, with
// one client made by New that knows all four:
//
//   - the view finds the leader and the learner, from Status on the
//     client's own connections: 100 probes open no connection;
//   - writes land on the leader, counted at the members' proxies;
//   - no write, linearizable read, watch or other call that learners
//     refuse reaches the learner; serializable reads do, since it is
//     caught up;
//   - WithLeader and WithAnyMember override the rules for one call;
//   - after MoveLeader, and after the leader is stopped, writes follow the
//     new leader by the second probe round completed after the change.
func TestClusterRouting(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	ctx := context.Background()
	actx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	waitCaughtUp(t, c)
	learner, err := c.AddMember(actx, true)
	if err != nil {
		t.Fatal(err)
	}
	ms := c.Members()
	li := indexOf(ms, learner.ClientAddr())
	cli := newBalanced(t, clientConfig(c.Endpoints()))

	leaderIdx := func() int {
		t.Helper()
		i, err := c.WaitLeader(actx)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	// writesLand checks that n writes reach only member want (proxy
	// counts, probes taken out).
	writesLand := func(what string, n int64, want int) {
		t.Helper()
		before := settledRequests(t, ms, cli)
		if r := hammer(ctx, 8, n, putOp(cli, "w")); r.fail.Load() != 0 {
			t.Fatalf("%s: writes failed: %v", what, r)
		}
		d := sub(settledRequests(t, ms, cli), before)
		t.Logf("%s: %d writes reached the members %v (leader %d, learner %d)", what, n, d, want, li)
		for i, v := range d {
			if (i == want && v != n) || (i != want && v != 0) {
				t.Errorf("%s: %d writes reached the members %v, want all on member %d", what, n, d, want)
				break
			}
		}
	}

	v := waitRounds(t, cli, 1)
	lead := leaderIdx()
	waitFor(t, 30*time.Second, "the view to know the leader and the learner", func() bool {
		v = viewOf(t, cli)
		ok := v.Leader == ms[lead].ClientAddr()
		for _, m := range v.Members {
			ok = ok && m.Verified && m.Learner == (m.Addr == learner.ClientAddr())
		}
		return ok
	})
	t.Logf("view after %d rounds: leader %s, members %+v", v.Rounds, v.Leader, v.Members)

	t.Run("probes open no connections", func(t *testing.T) {
		fast := newBalanced(t, clientConfig(c.Endpoints()), etcdbalance.WithClusterView(5*time.Millisecond))
		waitRounds(t, fast, 1)
		accepted := func() (n int64) {
			for _, m := range ms {
				n += m.Proxy().Stats().Accepted
			}
			return n
		}
		before, p0 := accepted(), probes(t, ms, fast)
		// The round in progress, if any, counted its probes already.
		r0 := viewOf(t, fast).Rounds
		waitRounds(t, fast, r0+101)
		after, p1 := accepted(), probes(t, ms, fast)
		sent := sub(p1, p0)
		t.Logf("%d probes %v: accepted connections %d → %d", sent[0]+sent[1]+sent[2]+sent[3], sent, before, after)
		if after != before {
			t.Errorf("probing opened %d connections", after-before)
		}
		for i, n := range sent {
			if n < 100 {
				t.Errorf("member %d got %d probes in 100 rounds", i, n)
			}
		}
	})

	t.Run("writes go to the leader", func(t *testing.T) {
		writesLand("writes", 300, leaderIdx())
	})

	t.Run("learner gets only what it serves", func(t *testing.T) {
		before := settledRequests(t, ms, cli)
		if r := hammer(ctx, 8, 600, getOp(cli, "w/1", linearizable)); r.fail.Load() != 0 {
			t.Fatalf("linearizable reads failed: %v", r)
		}
		if r := hammer(ctx, 4, 100, putOp(cli, "l")); r.fail.Load() != 0 {
			t.Fatalf("writes failed: %v", r)
		}
		// Other calls learners refuse: member list, lease calls, HashKV.
		for range 20 {
			if _, err := cli.MemberList(ctx); err != nil {
				t.Fatal(err)
			}
			l, err := cli.Grant(ctx, 60)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli.TimeToLive(ctx, l.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Revoke(ctx, l.ID); err != nil {
				t.Fatal(err)
			}
		}
		// Watches, each on its own Watcher (so its own stream).
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		var watchers []clientv3.Watcher
		for i := range 8 {
			w := clientv3.NewWatcher(cli)
			watchers = append(watchers, w)
			ch := w.Watch(wctx, fmt.Sprintf("lw/%d", i), clientv3.WithCreatedNotify())
			if r := <-ch; !r.Created {
				t.Fatalf("watch %d not created: %v", i, r.Err())
			}
		}
		st := memberStats(t, cli)
		for _, w := range watchers {
			_ = w.Close()
		}
		d := sub(settledRequests(t, ms, cli), before)
		t.Logf("600 linearizable reads, 100 writes, 80 other calls, 8 watches reached the members %v (learner %d)", d, li)
		if d[li] != 0 {
			t.Errorf("the learner got %d calls it refuses", d[li])
		}
		if s := st[learner.ClientAddr()]; s.Streams != 0 || !s.Learner {
			t.Errorf("the learner's stats: %+v, want no stream and Learner", s)
		}

		before = settledRequests(t, ms, cli)
		if r := hammer(ctx, 8, 900, getOp(cli, "w/1", serializable)); r.fail.Load() != 0 {
			t.Fatalf("serializable reads failed: %v", r)
		}
		d = sub(settledRequests(t, ms, cli), before)
		t.Logf("900 serializable reads reached the members %v (learner %d)", d, li)
		if d[li] == 0 {
			t.Errorf("the caught-up learner got no serializable read")
		}
	})

	t.Run("per-call overrides", func(t *testing.T) {
		lead := leaderIdx()
		before := settledRequests(t, ms, cli)
		if r := hammer(etcdbalance.WithLeader(ctx), 4, 200, getOp(cli, "w/1", mixed)); r.fail.Load() != 0 {
			t.Fatalf("reads failed: %v", r)
		}
		d := sub(settledRequests(t, ms, cli), before)
		t.Logf("200 reads WithLeader reached the members %v (leader %d)", d, lead)
		if d[lead] != 200 {
			t.Errorf("reads WithLeader reached the members %v, want all 200 on the leader %d", d, lead)
		}

		before = settledRequests(t, ms, cli)
		if r := hammer(etcdbalance.WithAnyMember(ctx), 8, 900, getOp(cli, "w/1", linearizable)); r.fail.Load() != 0 {
			t.Fatalf("reads failed: %v", r)
		}
		d = sub(settledRequests(t, ms, cli), before)
		t.Logf("900 linearizable reads WithAnyMember reached the members %v (leader %d, learner %d)", d, lead, li)
		if d[lead] < 100 || d[li] != 0 {
			t.Errorf("reads WithAnyMember reached the members %v: want the leader's share like the others', none on the learner", d)
		}
	})

	t.Run("Attach", func(t *testing.T) {
		cfg := clientConfig(c.Endpoints())
		cfg.DialOptions = etcdbalance.DialOptions()
		dcli, err := clientv3.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer dcli.Close()
		// clientv3 3.7 dials with grpc.NewClient: the channel, and so the
		// balancer, only exist after the first call.
		gctx, gcancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = dcli.Get(gctx, "attach-warmup")
		gcancel()
		if err != nil {
			t.Fatal(err)
		}
		if v := viewOf(t, dcli); v.Running {
			t.Fatalf("a DialOptions client has a view before Attach: %+v", v)
		}
		stop, err := etcdbalance.Attach(dcli)
		if err != nil {
			t.Fatal(err)
		}
		v := waitRounds(t, dcli, 1)
		if v.Leader == "" {
			v = waitRounds(t, dcli, 2)
		}
		if v.Leader != ms[leaderIdx()].ClientAddr() || !v.Running {
			t.Errorf("after Attach: %+v, want the leader %s", v, ms[leaderIdx()].ClientAddr())
		}
		if again, err := etcdbalance.Attach(dcli); err != nil {
			t.Errorf("second Attach: %v", err)
		} else {
			again() // does nothing
		}
		if !memberStats(t, dcli)[learner.ClientAddr()].Learner {
			t.Error("the learner is not tagged")
		}
		stop()
		stop()
		if v := viewOf(t, dcli); v.Running {
			t.Errorf("the view runs after stop: %+v", v)
		}
		for a, s := range memberStats(t, dcli) {
			if s.Leader || s.Learner || s.Lagging {
				t.Errorf("%s keeps the view's marks after stop: %+v", a, s)
			}
		}
		// Attach again, then close the client: the view ends with it.
		if _, err := etcdbalance.Attach(dcli); err != nil {
			t.Fatal(err)
		}
		waitRounds(t, dcli, 1)
		// TestMain's goroutine check fails the package if it does not.
		if err := dcli.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := etcdbalance.Attach(dcli); !errors.Is(err, etcdbalance.ErrClientClosed) {
			t.Errorf("Attach of a closed client: %v", err)
		}

		if _, err := etcdbalance.Attach(newStock(t, c.Endpoints(), "")); !errors.Is(err, etcdbalance.ErrNotBalanced) {
			t.Errorf("Attach of a stock client: %v", err)
		}
		off := clientConfig(c.Endpoints())
		off.DialOptions = etcdbalance.DialOptions(etcdbalance.WithClusterView(-1))
		ocli, err := clientv3.New(off)
		if err != nil {
			t.Fatal(err)
		}
		defer ocli.Close()
		if _, err := etcdbalance.Attach(ocli); !errors.Is(err, etcdbalance.ErrViewOff) {
			t.Errorf("Attach with the view switched off: %v", err)
		}

		// New's view ends when the client closes.
		ncli, err := etcdbalance.New(clientConfig(c.Endpoints()))
		if err != nil {
			t.Fatal(err)
		}
		_ = ncli.Close()
	})

	// writesFollow moves leadership by change, while writes run, and
	// checks that by the second round completed after the change, the
	// view has the new leader and writes land there. Writes that fail
	// meanwhile must fail with one of the transient errors: those of a
	// leader change, which a write through a follower gets as well
	// ("leader changed" where the leader itself says "raft proposal
	// dropped"), or, when the leader stops, those of the calls that were
	// in flight on it.
	writesFollow := func(what string, transient []string, change func() *etcdcluster.Member) {
		t.Helper()
		lctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var bg *result
		wg.Go(func() { bg = hammer(lctx, 4, 0, putOp(cli, "bg")) })
		to := change()
		r0 := viewOf(t, cli).Rounds
		v := waitRounds(t, cli, r0+2)
		stop()
		wg.Wait()
		t.Logf("%s: rounds %d → %d, view leader %s (want %s); writes meanwhile: %v", what, r0, v.Rounds, v.Leader, to.ClientAddr(), bg)
		if v.Leader != to.ClientAddr() {
			t.Fatalf("%s: by the second round after the change the view's leader is %q, want %s", what, v.Leader, to.ClientAddr())
		}
		for e := range bg.errs {
			if !slices.ContainsFunc(transient, func(s string) bool { return errorContains(errors.New(e), s) }) {
				t.Errorf("%s: a write failed with %q", what, e)
			}
		}
		writesLand(what, 200, indexOf(ms, to.ClientAddr()))
	}

	t.Run("MoveLeader", func(t *testing.T) {
		writesFollow("MoveLeader", leaderChange, func() *etcdcluster.Member {
			lead := leaderIdx()
			to := ms[(lead+1)%len(ms)]
			if to == learner {
				to = ms[(lead+2)%len(ms)]
			}
			if err := c.MoveLeader(actx, to); err != nil {
				t.Fatal(err)
			}
			return to
		})
	})

	t.Run("leader stopped", func(t *testing.T) {
		inFlight := append(slices.Clip(leaderChange), "error reading from server", "transport is closing", "connection reset")
		writesFollow("leader stopped", inFlight, func() *etcdcluster.Member {
			old := ms[leaderIdx()]
			if err := old.Stop(); err != nil {
				t.Fatal(err)
			}
			return ms[leaderIdx()]
		})
	})
	t.Logf("final:%s", formatStats(mustStats(t, cli)))
}
