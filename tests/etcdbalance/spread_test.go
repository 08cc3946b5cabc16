package etcdbalance_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// getKind is a way of reading: serializable Gets are served by the member
// itself, linearizable ones need a ReadIndex round with the leader.
type getKind int

const (
	serializable getKind = iota
	linearizable
	mixed
)

func (k getKind) String() string {
	return [...]string{"serializable", "linearizable", "mixed"}[k]
}

func getOp(cli *clientv3.Client, key string, k getKind) func(context.Context, int64) error {
	return func(ctx context.Context, i int64) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var opts []clientv3.OpOption
		if k == serializable || (k == mixed && i%2 == 1) {
			opts = append(opts, clientv3.WithSerializable())
		}
		_, err := cli.Get(ctx, key, opts...)
		return err
	}
}

// TestSpread: with every member healthy, one client's Gets, 16 at a time,
// are spread over the followers, counted at the members' proxies (the
// views' probes taken out), on 3 members and then on 5 after
// SetEndpoints. Both ways of making a client are checked (New, used for
// serializable Gets, and clientv3.New with DialOptions and Attach, used for
// linearizable ones), and our Stats must count the same picks as the
// proxies. Stock round_robin and pick_first are measured the same way and
// logged.
//
// After a warm-up of 500 Gets, of 6000 Gets the leader must serve at most
// 10%, and each follower 0.8–1.2× the followers' mean.
func TestSpread(t *testing.T) {
	const (
		conc  = 16
		warm  = 500
		calls = 6000
		stock = 3000
	)
	c := startCluster(t, etcdcluster.Config{Size: 3})
	eps := c.Endpoints()

	viaNew := newBalanced(t, clientConfig(eps))
	cfg := clientConfig(eps)
	cfg.DialOptions = etcdbalance.DialOptions()
	viaOpts, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = viaOpts.Close() })
	if _, err := etcdbalance.Attach(viaOpts); err != nil {
		t.Fatal(err)
	}
	ours := []*clientv3.Client{viaNew, viaOpts}
	roundRobin := newStock(t, eps, "")
	pickFirst := newStock(t, eps, "pick_first")

	ctx := context.Background()
	if _, err := viaNew.Put(ctx, "spread", "v"); err != nil {
		t.Fatal(err)
	}

	// measure runs n Gets and returns the requests each member's proxy
	// saw, less our views' probes, and the leader's index (or -1 if it
	// changed meanwhile).
	measure := func(cli *clientv3.Client, k getKind, n int64) ([]int64, int) {
		ms := c.Members()
		lead, _ := c.WaitLeader(ctx)
		before := requests(t, ms, ours...)
		r := hammer(ctx, conc, n, getOp(cli, "spread", k))
		if r.fail.Load() != 0 {
			t.Errorf("%v Gets failed on a healthy cluster: %v", k, r)
		}
		d := sub(requests(t, ms, ours...), before)
		if after, _ := c.WaitLeader(ctx); after != lead {
			lead = -1
		}
		return d, lead
	}
	describe := func(name string, k getKind, d []int64, lead int) string {
		return fmt.Sprintf("%s, %v Gets, %d members (leader %d): per-member requests %v, share/mean %v", name, k, len(d), lead, d, ratios(d))
	}
	checkOurs := func(name string, cli *clientv3.Client, k getKind) {
		t.Helper()
		waitFor(t, 30*time.Second, "the view to know the leader", func() bool { return viewOf(t, cli).Leader != "" })
		hammer(ctx, conc, warm, getOp(cli, "spread", k))
		before, p0 := memberStats(t, cli), probes(t, c.Members(), cli)
		d, lead := measure(cli, k, calls)
		after, p1 := memberStats(t, cli), probes(t, c.Members(), cli)
		st, _ := etcdbalance.Stats(cli)
		t.Logf("%s%s", describe(name, k, d, lead), formatStats(st))
		if lead < 0 {
			t.Logf("%s: the leader changed during the run; spread not checked", name)
			return
		}
		var total int64
		var followers []int64
		for i, v := range d {
			total += v
			if i != lead {
				followers = append(followers, v)
			}
		}
		share := float64(d[lead]) / float64(total)
		fr := ratios(followers)
		t.Logf("%s: leader share %.1f%%, followers share/mean %v", name, 100*share, fr)
		// Serializable reads: the leader is held in reserve, and gets only
		// probes while the followers are as fast as it. Linearizable reads:
		// a follower's waits for a ReadIndex round trip to the leader, so on
		// loopback the followers are often measurably slower and the
		// reserve rule lets the leader take its share (about 1/n), never
		// much more.
		limit := 0.10
		if k == linearizable {
			limit = 1.2 / float64(len(d))
		}
		if share > limit {
			t.Errorf("%s: the leader served %.1f%% of the reads, want ≤ %.0f%%", name, 100*share, 100*limit)
		}
		for _, r := range fr {
			if r < 0.8 || r > 1.2 {
				t.Errorf("%s: followers got %v× the followers' mean share, want each within 0.8–1.2×", name, fr)
				break
			}
		}
		// Our engine made those picks: its counts, less its probes, match
		// the proxies'. (Not exactly: a proxy counts a request when it
		// forwards it, which may be a moment after the call that sent it
		// was cancelled.)
		for i, m := range c.Members() {
			picks := after[m.ClientAddr()].Picks - before[m.ClientAddr()].Picks - (p1[i] - p0[i])
			if diff := picks - d[i]; diff < -(d[i]/50+3) || diff > d[i]/20+5 {
				t.Errorf("%s: member %d: engine counted %d picks, proxy %d requests", name, i, picks, d[i])
			}
		}
	}
	logStock := func(name string, cli *clientv3.Client) {
		d, lead := measure(cli, mixed, stock)
		t.Log(describe(name, mixed, d, lead))
	}
	round := func() {
		checkOurs("etcdbalance.New", viaNew, serializable)
		checkOurs("clientv3.New+DialOptions+Attach", viaOpts, linearizable)
		logStock("stock round_robin", roundRobin)
		logStock("stock pick_first", pickFirst)
	}
	round()

	// Grow to 5 members; every client follows SetEndpoints.
	addMembers(t, c, 2)
	eps = c.Endpoints()
	for _, cli := range []*clientv3.Client{viaNew, viaOpts, roundRobin, pickFirst} {
		cli.SetEndpoints(eps...)
	}
	for _, cli := range ours {
		waitFor(t, 30*time.Second, "5 ready members in Stats", func() bool {
			n := 0
			for _, s := range memberStats(t, cli) {
				if s.Ready {
					n++
				}
			}
			return n == 5
		})
	}
	// New members start in slow start: let it run out under load before
	// measuring the steady state (a warm-up, not a timing assertion).
	warmFor := 6 * time.Second // the engine's default SlowStart (5s, picker.Config) and a margin
	done := make(chan struct{})
	go func() { hammerFor(warmFor, conc/2, getOp(viaOpts, "spread", linearizable)); close(done) }()
	hammerFor(warmFor, conc/2, getOp(viaNew, "spread", serializable))
	<-done
	round()
}
