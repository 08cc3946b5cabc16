package etcdbalance_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// TestRefusingLeader: the leader answers every /etcdserverpb.KV/Put with
// ResourceExhausted "etcdserver: too many requests", as etcd does when
// its apply falls 5000 entries behind its commit (a defrag, a slow disk),
// while the followers, which forward writes to the leader through raft,
// are fine. Stock round_robin fails about a third of the Puts. etcdbalance
// must stop preferring the leader for writes once it keeps refusing: past
// the first 20, at least 97% of its Puts succeed. (What still fails: the
// Puts in flight on the leader when it is ejected, and one probe Put each
// time its ejection ends, after 1 s, 2 s, 4 s...: a handful, more on a
// slow machine, where the run lasts longer.) No Put is sent twice:
// the members receive exactly as many Puts as the client made.
func TestRefusingLeader(t *testing.T) {
	hooks := newServerHooks()
	c := startCluster(t, hooks.config(etcdcluster.Config{Size: 3}))
	ms := c.Members()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	li, err := c.WaitLeader(ctx)
	require.NoError(t, err)
	leader := ms[li]

	cli := newBalanced(t, clientConfig(c.Endpoints()))
	waitFor(t, 30*time.Second, "the view to find the leader", func() bool {
		return viewOf(t, cli).Leader == leader.ClientAddr()
	})
	hooks.setFault(leader.Name(), rpcPut, func(context.Context) error { return rpctypes.ErrGRPCRequestTooManyRequests })

	stock := newStock(t, c.Endpoints(), "")
	rs := hammer(ctx, 4, 300, putOp(stock, "refuse/stock"))
	t.Logf("stock round_robin, 300 Puts: %v", rs)
	assert.Positive(t, rs.fail.Load(), "stock never hit the refusing leader: the fault is not in place")

	before := total(hooks.count(ms, rpcPut))
	const warm, n = 20, 600
	var late result
	all := hammer(ctx, 4, warm+n, func(ctx context.Context, i int64) error {
		err := putOp(cli, "refuse/bal")(ctx, i)
		if i >= warm {
			late.add(err)
		}
		return err
	})
	sent := total(hooks.count(ms, rpcPut)) - before
	st, _ := etcdbalance.Stats(cli)
	t.Logf("etcdbalance, %d Puts: %v; after the first %d: %v%s", warm+n, all, warm, &late, formatStats(st))
	assert.GreaterOrEqual(t, late.rate(), 0.97, "etcdbalance Puts after the first %d: %v", warm, &late)
	assert.Equal(t, all.total(), sent, "the members received %d Puts for %d made by the client: a write was sent twice", sent, all.total())
	if li2, err := c.WaitLeader(ctx); err == nil && li2 != li {
		t.Logf("note: leadership moved from member %d to %d during the test", li, li2)
	}
}

// TestThrowawayChannel: clientv3 dials throwaway connections with the
// client's own dial options (3.7's version check under RejectOldCluster,
// cli.Status(ctx, endpoint)). They must never capture the client's engine:
// Stats lists every member, the view finds the leader, and writes go to
// the leader (counted at the members' servers).
func TestThrowawayChannel(t *testing.T) {
	hooks := newServerHooks()
	c := startCluster(t, hooks.config(etcdcluster.Config{Size: 3}))
	ms := c.Members()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	writesToLeader := func(t *testing.T, cli *clientv3.Client) {
		t.Helper()
		li, err := c.WaitLeader(ctx)
		require.NoError(t, err)
		waitFor(t, 30*time.Second, "the view to find the leader", func() bool {
			return viewOf(t, cli).Leader == ms[li].ClientAddr()
		})
		before := hooks.count(ms, rpcPut)
		r := hammer(ctx, 4, 200, putOp(cli, "throwaway"))
		require.Zero(t, r.fail.Load(), "Puts failed: %v", r)
		d := sub(hooks.count(ms, rpcPut), before)
		t.Logf("200 Puts reached the members %v (leader %d)", d, li)
		assert.Equal(t, int64(200), d[li], "writes did not all go to the leader: %v (leader %d)", d, li)
	}

	t.Run("New with RejectOldCluster", func(t *testing.T) {
		cfg := clientConfig(c.Endpoints())
		cfg.RejectOldCluster = true
		cli := newBalanced(t, cfg)
		waitStatsReady(t, cli, c.Endpoints())
		waitViewComplete(t, cli, c.Endpoints())
		writesToLeader(t, cli)
	})

	t.Run("DialOptions then Status", func(t *testing.T) {
		cli := newDialOptionsClient(t, clientConfig(c.Endpoints()))
		// A throwaway channel before the client's first call.
		_, err := cli.Status(ctx, c.Endpoints()[1])
		require.NoError(t, err)
		_, err = cli.Get(ctx, "throwaway")
		require.NoError(t, err)
		waitStatsReady(t, cli, c.Endpoints())
		stop, err := etcdbalance.Attach(cli)
		require.NoError(t, err)
		defer stop()
		waitViewComplete(t, cli, c.Endpoints())
		writesToLeader(t, cli)
	})
}

// learnerCluster starts 3 voters (with hooks, if not nil) and adds a
// caught-up learner.
func learnerCluster(t *testing.T, hooks *serverHooks) (*etcdcluster.Cluster, *etcdcluster.Member) {
	t.Helper()
	cfg := etcdcluster.Config{Size: 3}
	if hooks != nil {
		cfg = hooks.config(cfg)
	}
	c := startCluster(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitCaughtUp(t, c)
	learner, err := c.AddMember(ctx, true)
	require.NoError(t, err)
	waitCaughtUp(t, c)
	return c, learner
}

// TestFirstRoundLearner: a cluster of 3 voters and a learner, one voter
// black-holed so that the view's first probe round lasts the probe
// timeout. A Watch started right after New must never land on the
// learner (which refuses it with "rpc not supported for learner", and
// clientv3 ends the watch): the learner's role is not known before its
// probe is applied. Ten fresh clients, one watch each, each must deliver
// the write that follows.
func TestFirstRoundLearner(t *testing.T) {
	c, learner := learnerCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	li, err := c.WaitLeader(ctx)
	require.NoError(t, err)
	ms := c.Members()
	_, dark := follower(t, c)
	dark.Proxy().Blackhole(true)
	defer dark.Proxy().Blackhole(false)
	writer := newStock(t, []string{ms[li].ClientAddr()}, "")

	var onLearner int
	for i := range 20 {
		cli, err := etcdbalance.New(clientConfig(c.Endpoints()))
		require.NoError(t, err)
		// Once the live members are connected, and before the first
		// round ends (it waits for the black-holed member's probe).
		waitFor(t, 10*time.Second, "the live members to be connected", func() bool {
			_, ready := statsAddrs(t, cli)
			return len(ready) == 3
		})
		if r := viewOf(t, cli).Rounds; r != 0 {
			t.Logf("client %d: the first round ended before the watch started", i)
		}
		key := fmt.Sprintf("firstround/%d", i)
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		wch := cli.Watch(wctx, key, clientv3.WithRev(1))
		if _, err := writer.Put(ctx, key, "v"); err != nil {
			t.Fatal(err)
		}
		select {
		case resp, ok := <-wch:
			switch {
			case !ok:
				t.Errorf("client %d: watch closed without an event", i)
			case resp.Err() != nil:
				if isLearnerRefusal(resp.Err()) {
					onLearner++
				}
				t.Errorf("client %d: watch failed: %v", i, resp.Err())
			case len(resp.Events) == 0:
				t.Errorf("client %d: watch answered without events", i)
			}
		case <-wctx.Done():
			t.Errorf("client %d: no event within 20 s", i)
		}
		st, _ := etcdbalance.Stats(cli)
		for _, s := range st {
			if s.Addr == learner.ClientAddr() && s.Streams != 0 {
				t.Errorf("client %d: the learner carries %d streams", i, s.Streams)
			}
		}
		wcancel()
		_ = cli.Close()
	}
	t.Logf("%d of 20 watches landed on the learner", onLearner)
}

// TestLearnerOnlyClient: a client whose only endpoint is a learner. Stock
// clientv3 serves its serializable Gets, and fails its Puts and
// linearizable Gets at once with etcd's "rpc not supported for learner";
// etcdbalance must do the same (each call has 10 s, and must not use them
// up).
func TestLearnerOnlyClient(t *testing.T) {
	c, learner := learnerCluster(t, nil)
	_ = c
	eps := []string{learner.ClientAddr()}
	for _, x := range []struct {
		name string
		cli  *clientv3.Client
	}{
		{"stock", newStock(t, eps, "")},
		{"etcdbalance", newBalanced(t, clientConfig(eps))},
	} {
		t.Run(x.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := x.cli.Get(ctx, "learner-only", clientv3.WithSerializable())
			assert.NoError(t, err, "serializable Get")
			_, err = x.cli.Put(ctx, "learner-only", "v")
			assert.True(t, isLearnerRefusal(err), "Put: got %v, want etcd's \"rpc not supported for learner\"", err)
			_, err = x.cli.Get(ctx, "learner-only")
			assert.True(t, isLearnerRefusal(err), "linearizable Get: got %v, want etcd's \"rpc not supported for learner\"", err)
			assert.NoError(t, ctx.Err(), "the calls used up their deadline")
		})
	}
}

// lagCluster starts 3 voters with hooks, cuts a follower off from its
// peers and writes through the leader until cli's view sees it lagging.
// The cut is mended when the test ends.
func lagFollower(t *testing.T, c *etcdcluster.Cluster, cli *clientv3.Client, entries int) (int, *etcdcluster.Member) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	li, err := c.WaitLeader(ctx)
	require.NoError(t, err)
	fi, lagger := follower(t, c)
	writer := newStock(t, []string{c.Members()[li].ClientAddr()}, "")
	waitRounds(t, cli, 1)
	lagger.CutPeers()
	t.Cleanup(lagger.MendPeers)
	if r := hammer(ctx, 8, int64(entries), putOp(writer, "lag")); r.fail.Load() != 0 {
		t.Fatalf("writes failed: %v", r)
	}
	waitFor(t, 60*time.Second, "the view to see the cut follower lagging", func() bool {
		return memberView(t, cli, lagger.ClientAddr()).Lagging
	})
	return fi, lagger
}

// TestSnapshotCaughtUpVoter: with a learner and a lagging follower in the
// cluster, cli.Snapshot goes to a caught-up voting member every time
// (counted at the members' servers), never to the learner or the lagging
// follower, which carry no streams and so look cheapest.
func TestSnapshotCaughtUpVoter(t *testing.T) {
	hooks := newServerHooks()
	c, learner := learnerCluster(t, hooks)
	ms := c.Members()
	cli := newBalanced(t, clientConfig(c.Endpoints()), etcdbalance.WithLagThreshold(100))
	fi, _ := lagFollower(t, c, cli, 400)
	waitFor(t, 30*time.Second, "the view to know the learner", func() bool {
		m := memberView(t, cli, learner.ClientAddr())
		return m.Verified && m.Learner
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 8
	before := hooks.count(ms, rpcSnapshot)
	for range n {
		rc, err := cli.Snapshot(ctx)
		require.NoError(t, err)
		size, err := readAll(rc)
		require.NoError(t, err)
		require.Positive(t, size)
	}
	d := sub(hooks.count(ms, rpcSnapshot), before)
	lrn := indexOf(ms, learner.ClientAddr())
	t.Logf("%d snapshots reached the members %v (learner %d, lagging %d)", n, d, lrn, fi)
	assert.Equal(t, int64(n), total(d), "snapshots counted %v", d)
	assert.Zero(t, d[lrn], "snapshots from the learner")
	assert.Zero(t, d[fi], "snapshots from the lagging follower")
}

// TestRangeStream (etcd 3.7): serializable KV/RangeStream reads
// (GetStream) are the reads they are: they avoid a lagging member (lag
// exclusion, counted at the members' servers), and with lag exclusion off
// the monotonic guard still never returns a revision below one the client
// has seen. Skipped where client/v3 has no GetStream or the server does
// not implement RangeStream.
func TestRangeStream(t *testing.T) {
	if !hasGetStream() {
		t.Skip("client/v3 has no KV.GetStream (the 3.6 line)")
	}
	hooks := newServerHooks()
	c := startCluster(t, hooks.config(etcdcluster.Config{Size: 3}))
	ms := c.Members()
	cli := newBalanced(t, clientConfig(c.Endpoints()), etcdbalance.WithLagThreshold(100))
	unexcluded := newBalanced(t, clientConfig(c.Endpoints()), etcdbalance.WithLagThreshold(-1))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, _, err := getStream(ctx, cli, "rs"); status.Code(err) == codes.Unimplemented {
		t.Skipf("the server does not implement RangeStream: %v", err)
	}
	waitRounds(t, unexcluded, 1)
	fi, _ := lagFollower(t, c, cli, 400)

	run := func(t *testing.T, cli *clientv3.Client, n int) (maxSeen int64) {
		t.Helper()
		put, err := cli.Put(ctx, "rs", "v")
		require.NoError(t, err)
		floor := put.Header.Revision
		for i := range n {
			rev, _, err := getStream(ctx, cli, "rs", clientv3.WithSerializable())
			require.NoError(t, err, "GetStream %d", i)
			if rev < floor {
				t.Errorf("GetStream %d answered revision %d, below %d seen before", i, rev, floor)
			}
			floor = max(floor, rev)
		}
		return floor
	}

	t.Run("lag exclusion", func(t *testing.T) {
		before := hooks.count(ms, rpcRangeStream)
		seen := run(t, cli, 100)
		d := sub(hooks.count(ms, rpcRangeStream), before)
		t.Logf("100 serializable RangeStreams reached the members %v (lagging %d)", d, fi)
		assert.Zero(t, d[fi], "RangeStreams served by the lagging member")
		assert.GreaterOrEqual(t, viewOf(t, cli).Guard.Revision, seen, "the guard did not see the streams' revisions")
	})
	t.Run("monotonic guard", func(t *testing.T) {
		before := hooks.count(ms, rpcRangeStream)
		seen := run(t, unexcluded, 100)
		d := sub(hooks.count(ms, rpcRangeStream), before)
		g := viewOf(t, unexcluded).Guard
		t.Logf("100 serializable RangeStreams without lag exclusion reached the members %v (lagging %d); guard %+v", d, fi, g)
		assert.GreaterOrEqual(t, g.Revision, seen, "the guard did not see the streams' revisions")
	})
}

// hasGetStream reports whether clientv3's KV has GetStream (3.7 and
// later).
func hasGetStream() bool {
	return reflect.ValueOf(clientv3.NewKVFromKVClient(nil, nil)).MethodByName("GetStream").IsValid()
}

// grpcChainMarker is a client interceptor, chained before etcdbalance's,
// that sets entered when a Put starts down the chain (and so is about to
// be picked).
func grpcChainMarker(entered *atomic.Bool) grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == rpcPut {
			entered.Store(true)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// TestParkedCallWoken: a call that waits because no member may serve it
// yet is woken by the state change that lets it go, within its deadline:
//
//   - learner promoted: the client knows a learner (connected) and a
//     voter that is black-holed (its role unknown). A Put waits; the
//     learner is promoted; the Put completes;
//   - view stopped: a DialOptions client with Attach, whose only member
//     holds the view's Status probes, so the view never settles. A Put
//     waits for the view; Attach's stop ends the view; the Put completes.
func TestParkedCallWoken(t *testing.T) {
	hooks := newServerHooks()
	c, learner := learnerCluster(t, hooks)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("learner promoted", func(t *testing.T) {
		_, dark := follower(t, c)
		dark.Proxy().Blackhole(true)
		defer dark.Proxy().Blackhole(false)
		cli := newBalanced(t, clientConfig([]string{learner.ClientAddr(), dark.ClientAddr()}))
		waitFor(t, 30*time.Second, "the view to know the learner", func() bool {
			m := memberView(t, cli, learner.ClientAddr())
			return m.Verified && m.Learner
		})
		done := make(chan error, 1)
		go func() {
			// Less than grpc's 20 s connect timeout, whose state change
			// (the black-holed member's connection failing) would
			// republish the picker anyway.
			pctx, pcancel := context.WithTimeout(ctx, 15*time.Second)
			defer pcancel()
			_, err := cli.Put(pctx, "parked/promote", "v")
			done <- err
		}()
		// One more round in which the Put must still wait.
		waitRounds(t, cli, viewOf(t, cli).Rounds+1)
		select {
		case err := <-done:
			t.Fatalf("the Put returned while no member could serve it: %v", err)
		default:
		}
		require.NoError(t, c.PromoteLearner(ctx, learner))
		err := <-done
		assert.NoError(t, err, "the parked Put after the promotion")
	})

	t.Run("view stopped", func(t *testing.T) {
		m := c.Members()[0]
		if m == learner {
			m = c.Members()[1]
		}
		hooks.setFault(m.Name(), rpcStatus, func(ctx context.Context) error {
			<-ctx.Done() // hold the probe until the client gives up on it
			return ctx.Err()
		})
		defer hooks.setFault(m.Name(), rpcStatus, nil)
		var entered atomic.Bool
		cfg := clientConfig([]string{m.ClientAddr()})
		cfg.DialOptions = append(cfg.DialOptions, grpcChainMarker(&entered))
		cli := newDialOptionsClient(t, cfg, etcdbalance.WithClusterView(30*time.Second))
		statusBefore := hooks.count([]*etcdcluster.Member{m}, rpcStatus)[0]
		stop, err := etcdbalance.Attach(cli)
		require.NoError(t, err)
		defer stop()
		waitFor(t, 30*time.Second, "the view's first probe to reach the member", func() bool {
			return hooks.count([]*etcdcluster.Member{m}, rpcStatus)[0] > statusBefore
		})
		done := make(chan error, 1)
		go func() {
			pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
			defer pcancel()
			_, err := cli.Put(pctx, "parked/view", "v")
			done <- err
		}()
		waitFor(t, 10*time.Second, "the Put to start", entered.Load)
		select {
		case err := <-done:
			t.Logf("the Put returned before the view stopped (%v): not parked, the test proves little", err)
		default:
		}
		stop()
		assert.NoError(t, <-done, "the Put parked for the view, after the view stopped")
	})
}

// TestRestoreOlderRevision: the client has seen a high revision on
// cluster A, then its endpoints move to cluster B, whose revision is far
// lower (as after a restore from an older snapshot). Serializable reads
// then succeed at a bounded cost: the guard re-issues at most a handful of
// them as linearizable reads (not one per read), and it lowers its floor
// (GuardStats.Resets).
func TestRestoreOlderRevision(t *testing.T) {
	a := startCluster(t, etcdcluster.Config{Size: 1})
	b := startCluster(t, etcdcluster.Config{Size: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli := newBalanced(t, clientConfig(a.Endpoints()))
	require.Zero(t, hammer(ctx, 8, 1500, putOp(cli, "restore")).fail.Load())
	resp, err := cli.Get(ctx, "restore/0")
	require.NoError(t, err)
	high := resp.Header.Revision
	_, err = newStock(t, b.Endpoints(), "").Put(ctx, "restore/0", "b")
	require.NoError(t, err)

	cli.SetEndpoints(b.Endpoints()...)
	waitStatsReady(t, cli, b.Endpoints())
	waitViewComplete(t, cli, b.Endpoints())
	g0 := viewOf(t, cli).Guard
	const n = 200
	r := hammer(ctx, 4, n, getOp(cli, "restore/0", serializable))
	g1 := viewOf(t, cli).Guard
	t.Logf("revision %d on A; after the move: %v; guard before %+v, after %+v", high, r, g0, g1)
	assert.Zero(t, r.fail.Load(), "reads failed: %v", r)
	lin := g1.RetriedLinearizable - g0.RetriedLinearizable
	assert.LessOrEqual(t, lin, int64(5), "%d of %d serializable reads re-issued as linearizable", lin, n)
	assert.LessOrEqual(t, g1.Stale-g0.Stale, int64(10), "%d of %d reads counted stale", g1.Stale-g0.Stale, n)
	assert.Less(t, g1.Revision, high, "the guard's floor was not lowered")
	resets, ok := guardField(g1, "Resets")
	if assert.True(t, ok, "GuardStats has no Resets counter") {
		assert.Positive(t, resets, "GuardStats.Resets")
	}
}

// TestMonotonicPerClient: two clients built from one DialOptions() value
// (an apiserver's main and events clients), one on cluster A with a high
// revision, one on cluster B with a low one. B's serializable reads are
// never re-issued because of A's revisions: B's members see one Range
// per read, and B's guard counts nothing stale.
func TestMonotonicPerClient(t *testing.T) {
	hooks := newServerHooks()
	a := startCluster(t, etcdcluster.Config{Size: 1})
	b := startCluster(t, hooks.config(etcdcluster.Config{Size: 3}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := etcdbalance.DialOptions()
	cfgA, cfgB := clientConfig(a.Endpoints()), clientConfig(b.Endpoints())
	cfgA.DialOptions, cfgB.DialOptions = opts, opts
	cliA, cliB := newClientCfg(t, cfgA), newClientCfg(t, cfgB)

	require.Zero(t, hammer(ctx, 8, 1000, putOp(cliA, "mono")).fail.Load())
	resp, err := cliA.Get(ctx, "mono/0")
	require.NoError(t, err)
	highA := resp.Header.Revision
	_, err = cliB.Put(ctx, "mono/0", "b")
	require.NoError(t, err)
	// B's own write is a floor B's reads must respect: wait until every
	// member of B has applied it, so that only A's revisions could make
	// B's reads stale.
	waitCaughtUp(t, b)

	ms := b.Members()
	const n = 100
	before := total(hooks.count(ms, rpcRange))
	r := hammer(ctx, 4, n, getOp(cliB, "mono/0", serializable))
	ranges := total(hooks.count(ms, rpcRange)) - before
	t.Logf("A at revision %d; %d serializable reads on B: %v; B's members got %d Ranges", highA, n, r, ranges)
	assert.Zero(t, r.fail.Load())
	assert.Equal(t, int64(n), ranges, "B's reads were re-issued")
	vb, err := etcdbalance.ClusterView(cliB)
	if assert.NoError(t, err, "ClusterView of the second client") {
		assert.Zero(t, vb.Guard.Stale, "B's guard: %+v", vb.Guard)
		assert.Zero(t, vb.Guard.Resets, "B's guard: %+v", vb.Guard)
		assert.Less(t, vb.Guard.Revision, highA, "B's guard holds A's revision: %+v", vb.Guard)
	}
	if va, err := etcdbalance.ClusterView(cliA); assert.NoError(t, err) {
		assert.GreaterOrEqual(t, va.Guard.Revision, highA)
	}
	st, err := etcdbalance.Stats(cliB)
	if assert.NoError(t, err, "Stats of the second client") {
		assert.Len(t, st, 3, "Stats of B:%s", formatStats(st))
	}
}

// TestAutoSyncMembership: with AutoSyncInterval, the client's endpoints
// follow the cluster's members: a member added shows up in Stats (and in
// the stock client's endpoints), and is dropped once removed; reads run
// all along without a failure.
func TestAutoSyncMembership(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := clientConfig(c.Endpoints())
	cfg.AutoSyncInterval = 200 * time.Millisecond
	cli := newBalanced(t, cfg)
	stock := newClientCfg(t, cfg)
	_, err := cli.Put(ctx, "autosync", "v")
	require.NoError(t, err)

	lctx, lcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var rBal, rStock *result
	wg.Go(func() { rBal = hammer(lctx, 4, 0, getOp(cli, "autosync", mixed)) })
	wg.Go(func() { rStock = hammer(lctx, 2, 0, getOp(stock, "autosync", mixed)) })

	added := addMembers(t, c, 1)[0]
	waitStatsReady(t, cli, c.Endpoints())
	waitFor(t, 30*time.Second, "the stock client to sync the added member", func() bool {
		return hasEndpoint(stock, added.ClientAddr())
	})
	waitViewComplete(t, cli, c.Endpoints())
	require.NoError(t, c.RemoveMember(ctx, added))
	waitStatsReady(t, cli, c.Endpoints())
	waitFor(t, 30*time.Second, "the stock client to drop the removed member", func() bool {
		return !hasEndpoint(stock, added.ClientAddr())
	})
	waitViewComplete(t, cli, c.Endpoints())
	lcancel()
	wg.Wait()
	t.Logf("etcdbalance: %v; stock: %v", rBal, rStock)
	assert.Zero(t, rBal.fail.Load(), "etcdbalance reads failed: %v", rBal)
	assert.Positive(t, rBal.ok.Load())
}

// hasEndpoint reports whether cli's endpoints include addr, spelt
// host:port or as a URL (synced endpoints are the members' client URLs).
func hasEndpoint(cli *clientv3.Client, addr string) bool {
	return slices.ContainsFunc(cli.Endpoints(), func(ep string) bool {
		return ep == addr || strings.HasSuffix(ep, "://"+addr)
	})
}

// TestSetEndpoints: SetEndpoints narrows and widens the client's member
// set; Stats and the view follow, and calls succeed throughout, as with
// the stock client.
func TestSetEndpoints(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	eps := c.Endpoints()
	cli := newBalanced(t, clientConfig(eps))
	stock := newStock(t, eps, "")
	li, err := c.WaitLeader(ctx)
	require.NoError(t, err)
	leader := c.Members()[li].ClientAddr()
	for _, set := range [][]string{eps[:2], eps[1:], eps} {
		cli.SetEndpoints(set...)
		stock.SetEndpoints(set...)
		waitStatsReady(t, cli, set)
		// A leader outside the set is no leader for routing: the view
		// finds one only when the set holds it.
		waitViewVerified(t, cli, set, slices.Contains(set, leader))
		for _, x := range []struct {
			name string
			cli  *clientv3.Client
		}{{"stock", stock}, {"etcdbalance", cli}} {
			r := hammer(ctx, 4, 200, func(ctx context.Context, i int64) error {
				if i%4 == 0 {
					return putOp(x.cli, "setep")(ctx, i)
				}
				return getOp(x.cli, "setep/0", mixed)(ctx, i)
			})
			assert.Zero(t, r.fail.Load(), "%s on %v: %v", x.name, set, r)
		}
		st, _ := etcdbalance.Stats(cli)
		for _, s := range st {
			assert.True(t, slices.Contains(set, s.Addr), "Stats lists %s, not in %v", s.Addr, set)
		}
	}
}

// TestLearnerPromotedDuringWatches: eight watchers (distinct gRPC
// streams) run on a client that knows 3 voters and a learner while the
// learner is promoted; every watcher delivers every write, in order, and
// none fails.
func TestLearnerPromotedDuringWatches(t *testing.T) {
	c, learner := learnerCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cli := newBalanced(t, clientConfig(c.Endpoints()))
	waitFor(t, 30*time.Second, "the view to know the learner", func() bool {
		m := memberView(t, cli, learner.ClientAddr())
		return m.Verified && m.Learner
	})
	writer := newStock(t, c.Endpoints()[:3], "")
	start, err := writer.Put(ctx, "promote/start", "v")
	require.NoError(t, err)

	const watchers, writes = 8, 200
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	got := make([]atomic.Int64, watchers)
	errs := make(chan error, watchers)
	var wg sync.WaitGroup
	for i := range watchers {
		w := clientv3.NewWatcher(cli)
		defer func() { _ = w.Close() }()
		wch := w.Watch(wctx, "promote/k/", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))
		wg.Go(func() {
			last := int64(0)
			for resp := range wch {
				if err := resp.Err(); err != nil {
					errs <- fmt.Errorf("watcher %d: %w", i, err)
					return
				}
				for _, ev := range resp.Events {
					if ev.Kv.ModRevision <= last {
						errs <- fmt.Errorf("watcher %d: revision %d after %d", i, ev.Kv.ModRevision, last)
						return
					}
					last = ev.Kv.ModRevision
					got[i].Add(1)
				}
			}
		})
	}
	for i := range writes {
		if i == writes/2 {
			require.NoError(t, c.PromoteLearner(ctx, learner))
		}
		_, err := writer.Put(ctx, fmt.Sprintf("promote/k/%d", i), "v")
		require.NoError(t, err)
	}
	waitFor(t, 60*time.Second, "every watcher to deliver every write", func() bool {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		for i := range got {
			if got[i].Load() < writes {
				return false
			}
		}
		return true
	})
	wcancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, 30*time.Second, "the view to see the promotion", func() bool {
		m := memberView(t, cli, learner.ClientAddr())
		return m.Verified && !m.Learner
	})
}
