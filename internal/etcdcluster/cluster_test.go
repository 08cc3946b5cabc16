package etcdcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func startCluster(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	begin := time.Now()
	c, err := Start(testCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started %d members in %v", len(c.Members()), time.Since(begin))
	t.Cleanup(func() {
		begin := time.Now()
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		t.Logf("closed in %v", time.Since(begin))
		if _, err := os.Stat(c.dir); !os.IsNotExist(err) {
			t.Errorf("data directory left behind: %v", err)
		}
	})
	return c
}

func newClient(t *testing.T, c *Cluster, eps ...string) *clientv3.Client {
	t.Helper()
	cli, err := c.NewClient(eps...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustGet(t *testing.T, ctx context.Context, cli *clientv3.Client, key, want string, opts ...clientv3.OpOption) {
	t.Helper()
	resp, err := cli.Get(ctx, key, opts...)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
		t.Fatalf("get %s = %v, want %q", key, resp.Kvs, want)
	}
}

func streams(c *Cluster) []int64 {
	var s []int64
	for _, m := range c.Members() {
		s = append(s, m.Proxy().Stats().Streams)
	}
	return s
}

func TestPutGetThroughEachProxy(t *testing.T) {
	c := startCluster(t, Config{})
	ctx := testCtx(t)
	ms := c.Members()
	if got, want := c.Endpoints(), []string{ms[0].ClientAddr(), ms[1].ClientAddr(), ms[2].ClientAddr()}; !slices.Equal(got, want) {
		t.Fatalf("Endpoints() = %v, want %v", got, want)
	}
	for _, m := range ms {
		if m.ClientAddr() == m.DirectAddr() || m.ID() == 0 || m.Server() == nil || m.IsLearner() {
			t.Fatalf("member %s: client %s direct %s id %x", m.Name(), m.ClientAddr(), m.DirectAddr(), m.ID())
		}
	}

	for i, m := range ms {
		cli := newClient(t, c, m.ClientAddr())
		for _, o := range ms {
			o.Proxy().ResetStats()
		}
		key := fmt.Sprintf("k%d", i)
		if _, err := cli.Put(ctx, key, "v"); err != nil {
			t.Fatal(err)
		}
		mustGet(t, ctx, cli, key, "v")
		mustGet(t, ctx, cli, key, "v", clientv3.WithSerializable())
		// Exactly the three calls reached the member used, none the others.
		want := []int64{0, 0, 0}
		want[i] = 3
		waitFor(t, "streams counted", func() bool { return streams(c)[i] >= 3 })
		if got := streams(c); !slices.Equal(got, want) {
			t.Fatalf("streams after 3 calls via %s: %v, want %v", m.Name(), got, want)
		}
	}

	// The members advertise their proxies, so a syncing client stays behind them.
	resp, err := newClient(t, c).MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, rm := range resp.Members {
		if len(rm.ClientURLs) != 1 || !slices.ContainsFunc(ms, func(m *Member) bool { return rm.ClientURLs[0] == "http://"+m.ClientAddr() }) {
			t.Fatalf("member %s advertises %v", rm.Name, rm.ClientURLs)
		}
	}
}

func TestBlackholedMemberTimesOut(t *testing.T) {
	c := startCluster(t, Config{Size: 1})
	ctx := testCtx(t)
	m := c.Members()[0]
	cli := newClient(t, c)
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	m.Proxy().Blackhole(true)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := cli.Get(short, "k")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get through black hole: %v, want deadline exceeded", err)
	}
	mustGet(t, ctx, newClient(t, c, m.DirectAddr()), "k", "v")
	m.Proxy().Blackhole(false)
	mustGet(t, ctx, newClient(t, c), "k", "v")
}

func TestStopRestartKeepsData(t *testing.T) {
	c := startCluster(t, Config{})
	ctx := testCtx(t)
	cli := newClient(t, c)
	if _, err := cli.Put(ctx, "before", "1"); err != nil {
		t.Fatal(err)
	}
	li, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := c.Members()[(li+1)%3]
	id, dir, direct := m.ID(), m.DataDir(), m.DirectAddr()
	mcli := newClient(t, c, m.ClientAddr())
	mustGet(t, ctx, mcli, "before", "1")

	begin := time.Now()
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped a follower in %v", time.Since(begin))
	if m.Server() != nil || m.AppliedIndex() != 0 || m.IsLeader() {
		t.Fatal("stopped member still looks alive")
	}
	if err := m.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	// The proxy refuses like a down member.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = mcli.Get(short, "before")
	cancel()
	if err == nil {
		t.Fatal("get through a stopped member succeeded")
	}
	if _, err := cli.Put(ctx, "during", "2"); err != nil {
		t.Fatal(err)
	}

	begin = time.Now()
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %v", time.Since(begin))
	if m.ID() != id || m.DataDir() != dir || m.DirectAddr() != direct || m.Server() == nil {
		t.Fatal("restarted member changed identity")
	}
	if err := m.Restart(ctx); err == nil {
		t.Fatal("Restart of a running member succeeded")
	}
	// Linearizable reads through the restarted member see old and new data.
	mustGet(t, ctx, mcli, "before", "1")
	mustGet(t, ctx, mcli, "during", "2")
	if _, err := c.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStopLeaderHandsOver(t *testing.T) {
	c := startCluster(t, Config{})
	ctx := testCtx(t)
	li, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := c.Members()[li]
	begin := time.Now()
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped the leader in %v", time.Since(begin))
	ni, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Members()[ni] == old {
		t.Fatal("stopped member still leads")
	}
	if _, err := newClient(t, c).Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := old.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	mustGet(t, ctx, newClient(t, c, old.ClientAddr()), "k", "v")
}

func TestCutPeersLagsThenCatchesUp(t *testing.T) {
	c := startCluster(t, Config{})
	ctx := testCtx(t)
	li, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ms := c.Members()
	leader, cut := ms[li], ms[(li+1)%3]
	other := ms[(li+2)%3]
	cli := newClient(t, c, leader.ClientAddr(), other.ClientAddr())

	cut.CutPeers()
	const writes = 30
	for i := range writes {
		if _, err := cli.Put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the write quorum to apply", func() bool {
		return other.AppliedIndex() >= leader.AppliedIndex() && leader.AppliedIndex() > 0
	})
	// Writes went on with two members; the cut one fell behind (by all of
	// them but the few already on their way when it was cut).
	if lag := int64(leader.AppliedIndex()) - int64(cut.AppliedIndex()); lag < writes-5 {
		t.Fatalf("cut member lags by %d entries, want >= %d", lag, writes-5)
	}

	// The partition survives a restart of the cut member (which catches up
	// while it starts: it needs its peers to become ready).
	if err := cut.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := cut.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range writes {
		if _, err := cli.Put(ctx, fmt.Sprintf("again%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the write quorum to apply", func() bool { return other.AppliedIndex() >= leader.AppliedIndex() })
	if lag := int64(leader.AppliedIndex()) - int64(cut.AppliedIndex()); lag < writes-5 {
		t.Fatalf("after restart the cut member lags by %d entries, want >= %d", lag, writes-5)
	}

	cut.MendPeers()
	target := leader.AppliedIndex()
	waitFor(t, "the cut member to catch up", func() bool { return cut.AppliedIndex() >= target })
	mustGet(t, ctx, newClient(t, c, cut.ClientAddr()), fmt.Sprintf("again%d", writes-1), "v", clientv3.WithSerializable())
}

func TestMembershipChanges(t *testing.T) {
	c := startCluster(t, Config{Size: 1})
	ctx := testCtx(t)
	cli := newClient(t, c, c.Members()[0].ClientAddr())
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}

	learner, err := c.AddMember(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !learner.IsLearner() || learner.IsLeader() || len(c.Members()) != 2 || learner.ID() == 0 {
		t.Fatalf("learner: learner=%v leader=%v members=%d", learner.IsLearner(), learner.IsLeader(), len(c.Members()))
	}
	// A learner serves serializable reads of the replicated data.
	waitFor(t, "learner to catch up", func() bool { return learner.AppliedIndex() >= c.Members()[0].AppliedIndex() })
	mustGet(t, ctx, newClient(t, c, learner.ClientAddr()), "k", "v", clientv3.WithSerializable())

	if err := c.PromoteLearner(ctx, learner); err != nil {
		t.Fatal(err)
	}
	if learner.IsLearner() {
		t.Fatal("still a learner after promotion")
	}
	voter, err := c.AddMember(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if voter.IsLearner() || len(c.Members()) != 3 {
		t.Fatal("voting member not added")
	}
	if _, err := c.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := newClient(t, c).Put(ctx, "k2", "v2"); err != nil {
		t.Fatal(err)
	}
	mustGet(t, ctx, newClient(t, c, voter.ClientAddr()), "k2", "v2")

	for _, m := range []*Member{voter, learner} {
		if err := c.RemoveMember(ctx, m); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(m.DataDir()); !os.IsNotExist(err) {
			t.Fatalf("data of removed member %s left: %v", m.Name(), err)
		}
	}
	if len(c.Members()) != 1 {
		t.Fatalf("%d members left", len(c.Members()))
	}
	resp, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Members) != 1 {
		t.Fatalf("etcd lists %d members", len(resp.Members))
	}
	if _, err := cli.Put(ctx, "k3", "v3"); err != nil {
		t.Fatal(err)
	}
}

func TestMoveLeader(t *testing.T) {
	c := startCluster(t, Config{})
	ctx := testCtx(t)
	li, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ms := c.Members()
	if !ms[li].IsLeader() {
		t.Fatal("WaitLeader's member does not lead")
	}
	to := ms[(li+1)%3]
	if err := c.MoveLeader(ctx, to); err != nil {
		t.Fatal(err)
	}
	got, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ms[got] != to || !to.IsLeader() {
		t.Fatalf("leader is %s, want %s", ms[got].Name(), to.Name())
	}
	if err := c.MoveLeader(ctx, to); err != nil {
		t.Fatalf("move to the current leader: %v", err)
	}
}

func TestTLS(t *testing.T) {
	tc, err := GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, Config{TLS: tc})
	ctx := testCtx(t)
	cli := newClient(t, c)
	if _, err := cli.Put(ctx, "secure", "yes"); err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Members() {
		mustGet(t, ctx, newClient(t, c, m.ClientAddr()), "secure", "yes")
		// TLS passes through the proxy untouched and unparsed.
		if s := m.Proxy().Stats(); s.BytesToServer == 0 || s.Streams != 0 {
			t.Fatalf("proxy of %s: %+v", m.Name(), s)
		}
	}

	// Without a client certificate the members refuse the handshake.
	noCert := *tc
	noCert.ClientCertFile, noCert.ClientKeyFile = "", ""
	tlsCfg, err := noCert.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	anon, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints()[:1], TLS: tlsCfg, Logger: c.cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = anon.Close() }()
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := anon.Get(short, "secure"); err == nil {
		t.Fatal("get without a client certificate succeeded")
	}
}

func TestClustersSideBySide(t *testing.T) {
	ctx := testCtx(t)
	var wg sync.WaitGroup
	clusters := make([]*Cluster, 2)
	errs := make([]error, 2)
	for i := range clusters {
		wg.Go(func() { clusters[i], errs[i] = Start(ctx, Config{Size: 1}) })
	}
	wg.Wait()
	for i, c := range clusters {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	for i, c := range clusters {
		cli := newClient(t, c)
		if _, err := cli.Put(ctx, "owner", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range clusters {
		mustGet(t, ctx, newClient(t, c), "owner", fmt.Sprint(i))
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// And one more after the others are gone.
	c := startCluster(t, Config{Size: 1})
	if _, err := newClient(t, c).Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, size := range []int{-1, 10} {
		if _, err := Start(context.Background(), Config{Size: size}); err == nil {
			t.Fatalf("size %d accepted", size)
		}
	}
}

func TestReservePortsDistinct(t *testing.T) {
	ports, err := reservePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	defer releasePorts(ports...)
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d drawn twice", p)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("reserved port %d not bindable: %v", p, err)
		}
		_ = ln.Close()
	}
	more, err := reservePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	defer releasePorts(more...)
	for _, p := range more {
		if seen[p] {
			t.Fatalf("port %d reserved twice", p)
		}
	}
}
