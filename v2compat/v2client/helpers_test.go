package v2client_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v2"
	"go.uber.org/goleak"

	"github.com/etcdbalance/etcdbalance-go/internal/v2cluster"
	"github.com/etcdbalance/etcdbalance-go/v2compat"
	"github.com/etcdbalance/etcdbalance-go/v2compat/v2client"
)

func TestMain(m *testing.M) {
	// Build (or find) the etcd 3.5 member binary once, outside any test's
	// deadline: a cold build takes about a minute. No server is skipped
	// for: a machine that cannot build it fails here.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	_, err := v2cluster.Binary(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "v2client tests need the etcd 3.5 member binary:", err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// newInner returns a fresh *http.Transport, its idle connections closed at
// the end of the test (goleak would see their goroutines otherwise).
func newInner(t *testing.T) *http.Transport {
	inner := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(inner.CloseIdleConnections)
	return inner
}

// balanced returns our client over the cluster's proxies.
func balanced(t *testing.T, cl *v2cluster.Cluster, cfg client.Config, opts ...v2client.Option) (client.KeysAPI, *v2client.Client) {
	t.Helper()
	if cfg.Endpoints == nil {
		cfg.Endpoints = cl.Endpoints()
	}
	if cfg.Transport == nil {
		cfg.Transport = newInner(t)
	}
	c, err := v2client.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	bc := c.(*v2client.Client)
	t.Cleanup(func() { bc.Close() })
	return client.NewKeysAPI(c), bc
}

// stock returns the stock v2 client over the cluster's proxies. If pin is
// not "", the client is reshuffled until it pins that endpoint: the worst
// case, the one of the incident.
func stock(t *testing.T, cl *v2cluster.Cluster, cfg client.Config, pin string) client.KeysAPI {
	t.Helper()
	k, _ := stockClient(t, cl, cfg, pin)
	return k
}

func stockClient(t *testing.T, cl *v2cluster.Cluster, cfg client.Config, pin string) (client.KeysAPI, client.Client) {
	t.Helper()
	cfg.Endpoints = cl.Endpoints()
	cfg.Transport = newInner(t)
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pinTo(t, cl, c, pin)
	return client.NewKeysAPI(c), c
}

// pinTo reshuffles the stock client c until it pins endpoint pin.
// SetEndpoints resets the client's pin to the first endpoint of its new
// order, so it is called at least once: the order alone does not show a pin
// that moved after a failure.
func pinTo(t *testing.T, cl *v2cluster.Cluster, c client.Client, pin string) {
	t.Helper()
	if pin == "" {
		return
	}
	for i := 0; ; i++ {
		if i == 1000 {
			t.Fatalf("the stock client never pinned %s", pin)
		}
		if err := c.SetEndpoints(cl.Endpoints()); err != nil {
			t.Fatal(err)
		}
		if c.Endpoints()[0] == pin {
			return
		}
	}
}

// waitLeader waits until the transport knows the leader and returns the
// index of that member.
func waitLeader(t *testing.T, cl *v2cluster.Cluster, tr *v2compat.Transport) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		li, err := cl.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Stats().Leader == cl.Member(li).URL() {
			return li
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the transport never found leader m%d (it says %q)", li, tr.Stats().Leader)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// follower returns the index of a member that is not the leader.
func follower(t *testing.T, cl *v2cluster.Cluster) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	li, err := cl.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return (li + 1) % len(cl.Members())
}

// seed writes n keys under dir and waits until every member has them.
func seed(t *testing.T, cl *v2cluster.Cluster, kapi client.KeysAPI, dir string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		if _, err := kapi.Set(ctx, fmt.Sprintf("%s/k%d", dir, i), "v", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
}

// resetProxies zeroes the request counts at every member's proxy.
func resetProxies(cl *v2cluster.Cluster) {
	for _, m := range cl.Members() {
		m.Proxy().ResetStats()
	}
}

// proxyCounts returns the HTTP requests each member's proxy has seen, once
// they add up to at least want. A proxy counts a request after writing it to
// the member, so the answer can reach the client before the count moves:
// wait for the counts to settle (up to 2 s).
func proxyCounts(cl *v2cluster.Cluster, want int64) []int64 {
	deadline := time.Now().Add(2 * time.Second)
	for {
		var out []int64
		var sum int64
		for _, m := range cl.Members() {
			n := m.Proxy().Stats().Streams
			out = append(out, n)
			sum += n
		}
		if sum >= want || time.Now().After(deadline) {
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// result summarises a run of operations.
type result struct {
	ok, failed int
	lat        []time.Duration
}

func (r *result) String() string {
	if len(r.lat) == 0 {
		return "no operations"
	}
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	q := func(p float64) time.Duration { return r.lat[int(p*float64(len(r.lat)-1))].Round(10 * time.Microsecond) }
	return fmt.Sprintf("%d ok, %d failed (%.2f%% ok); latency p50 %v p99 %v max %v",
		r.ok, r.failed, 100*float64(r.ok)/float64(r.ok+r.failed), q(0.5), q(0.99), q(1))
}

func (r *result) okRate() float64 { return float64(r.ok) / float64(r.ok+r.failed) }

// run calls op n times from conc goroutines and collects the outcomes.
func run(n, conc int, op func(i int) error) *result {
	var (
		mu   sync.Mutex
		res  result
		next int64 = -1
		wg   sync.WaitGroup
	)
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(atomic.AddInt64(&next, 1))
				if i >= n {
					return
				}
				start := time.Now()
				err := op(i)
				el := time.Since(start)
				mu.Lock()
				res.lat = append(res.lat, el)
				if err != nil {
					res.failed++
				} else {
					res.ok++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return &res
}

// checkSpread fails unless every count is within [lo, hi] × the mean.
func checkSpread(t *testing.T, counts []int64, lo, hi float64) {
	t.Helper()
	var sum int64
	for _, c := range counts {
		sum += c
	}
	mean := float64(sum) / float64(len(counts))
	var parts []string
	bad := false
	for i, c := range counts {
		r := float64(c) / mean
		parts = append(parts, fmt.Sprintf("m%d %d (%.2f×)", i, c, r))
		if r < lo || r > hi {
			bad = true
		}
	}
	if bad {
		t.Fatalf("requests per member outside %.1f–%.1f× the mean: %s", lo, hi, strings.Join(parts, ", "))
	}
	t.Logf("requests per member: %s", strings.Join(parts, ", "))
}

func isCode(err error, code int) bool {
	e, ok := err.(client.Error)
	return ok && e.Code == code
}
