package etcdbalance_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// TestMain checks that the tests leave no goroutine behind. Nothing needs
// to be ignored: every etcd member, proxy and client is closed by its test,
// grpc and etcd start no process-wide goroutines that outlive them here,
// and the registry's release (context.AfterFunc, runtime.AddCleanup) runs
// to completion. goleak retries for a while, which covers goroutines that
// are still winding down when the last test returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startCluster starts a cluster of real etcd members behind fault proxies
// and waits for a leader; it is closed when the test ends.
func startCluster(t testing.TB, cfg etcdcluster.Config) *etcdcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := etcdcluster.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	if _, err := c.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func clientConfig(eps []string) clientv3.Config {
	return clientv3.Config{Endpoints: eps, Logger: zap.NewNop(), DialTimeout: 5 * time.Second}
}

// newBalanced returns a client made by New, closed when the test ends.
func newBalanced(t testing.TB, cfg clientv3.Config, opts ...etcdbalance.Option) *clientv3.Client {
	t.Helper()
	cli, err := etcdbalance.New(cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// newStock returns a clientv3 client with the stock policy (round_robin,
// set by clientv3's resolver) or, for policy "pick_first", grpc's
// pick_first.
func newStock(t *testing.T, eps []string, policy string) *clientv3.Client {
	t.Helper()
	cfg := clientConfig(eps)
	if policy != "" {
		cfg.DialOptions = []grpc.DialOption{
			grpc.WithDisableServiceConfig(),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"` + policy + `":{}}]}`),
		}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("clientv3.New: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// result tallies a load run.
type result struct {
	ok, fail atomic.Int64
	mu       sync.Mutex
	errs     map[string]int // distinct error texts, for the log
}

func (r *result) add(err error) {
	if err == nil {
		r.ok.Add(1)
		return
	}
	r.fail.Add(1)
	r.mu.Lock()
	if r.errs == nil {
		r.errs = map[string]int{}
	}
	r.errs[err.Error()]++
	r.mu.Unlock()
}

func (r *result) total() int64 { return r.ok.Load() + r.fail.Load() }

func (r *result) rate() float64 {
	if n := r.total(); n > 0 {
		return float64(r.ok.Load()) / float64(n)
	}
	return 0
}

func (r *result) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := fmt.Sprintf("%d ok, %d failed (%.2f%% ok)", r.ok.Load(), r.fail.Load(), 100*r.rate())
	n := 0
	for e, k := range r.errs {
		if n == 3 {
			s += "; …"
			break
		}
		s += fmt.Sprintf("; %d× %q", k, e)
		n++
	}
	return s
}

// hammer runs op from conc goroutines until n operations have run (n > 0)
// or ctx ends, and waits for all of them to finish. op gets the sequence
// number of the operation.
func hammer(ctx context.Context, conc int, n int64, op func(ctx context.Context, i int64) error) *result {
	r := &result{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if n > 0 && i >= n {
					return
				}
				err := op(ctx, i)
				if ctx.Err() != nil && err != nil {
					return // the run ended, not the operation
				}
				r.add(err)
			}
		})
	}
	wg.Wait()
	return r
}

// hammerFor runs op like hammer, for d, then cancels the operations still
// running (so that they end Canceled, which blames no member, rather than
// DeadlineExceeded).
func hammerFor(d time.Duration, conc int, op func(ctx context.Context, i int64) error) *result {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t := time.AfterFunc(d, cancel)
	defer t.Stop()
	return hammer(ctx, conc, 0, op)
}

// gets returns an op that alternates linearizable and serializable Gets
// of key, each with its own timeout.
func gets(cli *clientv3.Client, key string, timeout time.Duration) func(context.Context, int64) error {
	return func(ctx context.Context, i int64) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var err error
		if i%2 == 0 {
			_, err = cli.Get(ctx, key)
		} else {
			_, err = cli.Get(ctx, key, clientv3.WithSerializable())
		}
		return err
	}
}

// proxyStreams returns the requests each member's proxy has seen (HTTP/2
// streams, counted outside the client).
func proxyStreams(ms []*etcdcluster.Member) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Proxy().Stats().Streams
	}
	return out
}

func sub(after, before []int64) []int64 {
	out := make([]int64, len(after))
	for i := range after {
		out[i] = after[i] - before[i]
	}
	return out
}

// ratios returns each count divided by the mean count.
func ratios(d []int64) []float64 {
	var sum int64
	for _, v := range d {
		sum += v
	}
	out := make([]float64, len(d))
	if sum == 0 {
		return out
	}
	mean := float64(sum) / float64(len(d))
	for i, v := range d {
		out[i] = math.Round(100*float64(v)/mean) / 100
	}
	return out
}

// addMembers adds n voting members one at a time. Before each it waits
// until every member has applied everything the leader has: a member that
// joins while another has not yet applied the previous addition can be
// told a stale member list by it and refuse to start ("member count is
// unequal").
func addMembers(t *testing.T, c *etcdcluster.Cluster, n int) []*etcdcluster.Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var added []*etcdcluster.Member
	for range n {
		waitCaughtUp(t, c)
		m, err := c.AddMember(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, m)
	}
	waitCaughtUp(t, c)
	return added
}

// waitCaughtUp waits until every member has applied the same raft index.
func waitCaughtUp(t *testing.T, c *etcdcluster.Cluster) {
	t.Helper()
	waitFor(t, 30*time.Second, "every member to catch up", func() bool {
		var first uint64
		for i, m := range c.Members() {
			a := m.AppliedIndex()
			if i == 0 {
				first = a
			} else if a != first {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond until it holds or timeout passes (then the test
// fails). It asserts nothing about how long the wait took.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memberStats returns Stats(cli) by address.
func memberStats(t *testing.T, cli *clientv3.Client) map[string]etcdbalance.MemberStats {
	t.Helper()
	st, err := etcdbalance.Stats(cli)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	m := map[string]etcdbalance.MemberStats{}
	for _, s := range st {
		m[s.Addr] = s
	}
	return m
}

func formatStats(st []etcdbalance.MemberStats) string {
	var b strings.Builder
	for _, s := range st {
		fmt.Fprintf(&b, "\n  %s ready=%v picks=%d inflight=%d streams=%d est=%v failures=%d ejected=%v",
			s.Addr, s.Ready, s.Picks, s.InFlight, s.Streams, s.Estimate, s.Failures, s.Ejected)
	}
	return b.String()
}

// viewOf returns ClusterView(cli) or fails the test.
func viewOf(t testing.TB, cli *clientv3.Client) etcdbalance.View {
	t.Helper()
	v, err := etcdbalance.ClusterView(cli)
	if err != nil {
		t.Fatalf("ClusterView: %v", err)
	}
	return v
}

// waitRounds waits until cli's view has completed at least n probe rounds
// and returns the view. It counts rounds; it asserts nothing about time.
func waitRounds(t testing.TB, cli *clientv3.Client, n int64) etcdbalance.View {
	t.Helper()
	var v etcdbalance.View
	waitFor(t, 60*time.Second, fmt.Sprintf("%d probe rounds", n), func() bool {
		v = viewOf(t, cli)
		return v.Rounds >= n
	})
	return v
}

// probes returns the Status probes each member was sent by the views of
// clis, in the order of ms.
func probes(t testing.TB, ms []*etcdcluster.Member, clis ...*clientv3.Client) []int64 {
	t.Helper()
	out := make([]int64, len(ms))
	for _, cli := range clis {
		byAddr := map[string]int64{}
		for _, m := range viewOf(t, cli).Members {
			byAddr[m.Addr] = m.Probes
		}
		for i, m := range ms {
			out[i] += byAddr[m.ClientAddr()]
		}
	}
	return out
}

// requests returns the requests each member's proxy has seen less the
// probes the views of clis sent it: the client traffic. A probe is counted
// by the view when sent and by the proxy when it arrives, so a probe in
// flight makes this one low for a moment; settledRequests avoids that.
func requests(t testing.TB, ms []*etcdcluster.Member, clis ...*clientv3.Client) []int64 {
	t.Helper()
	p := probes(t, ms, clis...)
	s := proxyStreams(ms)
	return sub(s, p)
}

// settledRequests is requests taken just after cli's view completes a
// round, when none of its probes is in flight (rounds are ≥ 0.8 s apart
// with the default interval). cli must be the only client with a view that
// talks to ms.
func settledRequests(t testing.TB, ms []*etcdcluster.Member, cli *clientv3.Client) []int64 {
	t.Helper()
	r := viewOf(t, cli).Rounds
	var out []int64
	waitFor(t, 60*time.Second, "a probe round to complete", func() bool {
		if viewOf(t, cli).Rounds <= r {
			return false
		}
		out = requests(t, ms, cli)
		return true
	})
	return out
}

// errorContains reports whether err's text contains s.
func errorContains(err error, s string) bool {
	return err != nil && s != "" && strings.Contains(err.Error(), s)
}
