package v2client_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v2"

	"github.com/etcdbalance/etcdbalance-go/internal/v2cluster"
	"github.com/etcdbalance/etcdbalance-go/v2compat/v2client"
)

// getAll runs n concurrent Gets of seeded keys with a 10 s budget each.
func getAll(kapi client.KeysAPI, dir string, n int) *result {
	return run(n, 16, func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := kapi.Get(ctx, fmt.Sprintf("%s/k%d", dir, i%20), nil)
		return err
	})
}

// A black-holed member (connections open, no bytes either way) with a 1 s
// HeaderTimeoutPerRequest: at least 99.5% of Gets succeed. The stock client,
// pinned to that member as in the incident, is measured beside it.
func TestBlackholedMember(t *testing.T) {
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3})
	cfg := client.Config{HeaderTimeoutPerRequest: time.Second}
	kapi, c := balanced(t, cl, cfg)
	seed(t, cl, kapi, "/bh", 20)
	bad := cl.Member(follower(t, cl))
	skapi := stock(t, cl, cfg, bad.URL())

	bad.Proxy().Blackhole(true)
	defer bad.Proxy().Blackhole(false)
	const n = 3000
	start := time.Now()
	res := getAll(kapi, "/bh", n)
	t.Logf("balanced, m%d black-holed: %d Gets in %v: %v", bad.Index(), n, time.Since(start).Round(time.Millisecond), res)
	for _, s := range c.Transport().Stats().Members {
		if s.Addr == strings.ToLower(bad.URL()) {
			t.Logf("the picker's view of m%d: picks %d, failures %d, ejected %v, estimate %v", bad.Index(), s.Picks, s.Failures, s.Ejected, s.Estimate)
		}
	}
	start = time.Now()
	sres := getAll(skapi, "/bh", n)
	t.Logf("stock, pinned to m%d: %d Gets in %v: %v", bad.Index(), n, time.Since(start).Round(time.Millisecond), sres)
	if res.okRate() < 0.995 {
		t.Fatalf("only %.2f%% of Gets succeeded", 100*res.okRate())
	}
}

// A killed member: reads go on.
func TestKilledMember(t *testing.T) {
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3})
	cfg := client.Config{HeaderTimeoutPerRequest: time.Second}
	kapi, _ := balanced(t, cl, cfg)
	seed(t, cl, kapi, "/kill", 20)
	dead := cl.Member(follower(t, cl))
	skapi := stock(t, cl, cfg, dead.URL())
	// Warm up, so that the kill hits connections in use.
	getAll(kapi, "/kill", 300)
	if err := dead.Kill(); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	res := getAll(kapi, "/kill", n)
	t.Logf("balanced, m%d killed: %d Gets: %v", dead.Index(), n, res)
	sres := getAll(skapi, "/kill", n)
	t.Logf("stock, pinned to m%d: %d Gets: %v", dead.Index(), n, sres)
	if res.okRate() < 0.995 {
		t.Fatalf("only %.2f%% of Gets succeeded", 100*res.okRate())
	}
}

// Watches (long polls) deliver every index, in order, while the member
// serving some of them is killed and restarted. The v2 client retries each
// cut watch at once through the transport; this relies on the transport's
// "just failed" mark (the v2compat transport): without it the retries went back
// to the dead member and a watcher failed, in 3 runs of 3.
func TestWatchAcrossRestart(t *testing.T) {
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3})
	kapi, c := balanced(t, cl, client.Config{HeaderTimeoutPerRequest: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	resp, err := kapi.Set(ctx, "/w/start", "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	after := resp.Node.ModifiedIndex

	const watchers, writes = 6, 150
	got := make([][]uint64, watchers)
	errs := make([]error, watchers)
	var wg sync.WaitGroup
	for w := 0; w < watchers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			wa := kapi.Watcher("/w/k", &client.WatcherOptions{AfterIndex: after, Recursive: true})
			for len(got[w]) < writes {
				r, err := wa.Next(ctx)
				if err != nil {
					errs[w] = err
					return
				}
				got[w] = append(got[w], r.Node.ModifiedIndex)
			}
		}(w)
	}
	// Let every watch reach a member before writing.
	waitStreams(t, c, watchers)

	victim := -1
	var want []uint64
	for i := 0; i < writes; i++ {
		r, err := kapi.Set(ctx, fmt.Sprintf("/w/k/%d", i), "v", nil)
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		want = append(want, r.Node.ModifiedIndex)
		switch i {
		case 40:
			victim = streamingFollower(t, cl, c)
			t.Logf("killing m%d, which serves watches", victim)
			if err := cl.Member(victim).Kill(); err != nil {
				t.Fatal(err)
			}
		case 90:
			if err := cl.Member(victim).Restart(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("m%d restarted", victim)
		}
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	for w := range got {
		if errs[w] != nil {
			t.Fatalf("watcher %d: %v after %d events", w, errs[w], len(got[w]))
		}
		if fmt.Sprint(got[w]) != fmt.Sprint(want) {
			t.Fatalf("watcher %d saw %v\nwant %v", w, got[w], want)
		}
	}
	t.Logf("%d watchers each saw all %d indexes in order", watchers, writes)
}

// waitStreams waits until n watches are open at the members.
func waitStreams(t *testing.T, c *v2client.Client, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var open int64
		for _, s := range c.Transport().Stats().Members {
			open += s.Streams
		}
		if open >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d watches open", open, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// streamingFollower returns a follower that serves at least one watch.
func streamingFollower(t *testing.T, cl *v2cluster.Cluster, c *v2client.Client) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	li, err := cl.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	streams := map[string]int64{}
	for _, s := range c.Transport().Stats().Members {
		streams[s.Addr] = s.Streams
	}
	for i, m := range cl.Members() {
		if i != li && streams[strings.ToLower(m.URL())] > 0 {
			return i
		}
	}
	t.Fatalf("no follower serves a watch: %v", streams)
	return -1
}

// opCounts is what one client did under one fault: calls made, calls
// reported successful, and the symptoms of a request applied twice.
type opCounts struct {
	calls, ok, twice int
}

// TestOneShotNotRepeated: under a black hole and a kill, Create, Delete and
// CreateInOrder are applied no more often through the balancing transport
// than through the stock client, and never twice. A Create sent twice would
// come back "key already exists" (105) for its own key, a Delete sent twice
// "key not found" (100); a CreateInOrder sent twice leaves more keys than
// calls. Both clients run side by side, the stock one pinned to the faulty
// member, and the fault strikes while their requests are in flight.
func TestOneShotNotRepeated(t *testing.T) {
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3})
	cfg := client.Config{HeaderTimeoutPerRequest: time.Second}
	kapi, c := balanced(t, cl, cfg)
	bad := cl.Member(follower(t, cl))
	skapi, sc := stockClient(t, cl, cfg, "")
	admin := stock(t, cl, client.Config{}, "")
	clients := map[string]client.KeysAPI{"balanced": kapi, "stock": skapi}
	const n = 60

	for _, fault := range []string{"blackhole", "kill"} {
		for name := range clients {
			seed(t, cl, admin, "/del/"+fault+"/"+name, n)
		}
		pinTo(t, cl, sc, bad.URL())
		counts := map[string]map[string]*opCounts{}
		for name := range clients {
			counts[name] = map[string]*opCounts{"create": {calls: n}, "delete": {calls: n}, "inorder": {calls: n}}
		}
		var mu sync.Mutex
		do := func(name, op string, dup int, f func(ctx context.Context, i int) error) {
			run(n, 10, func(i int) error {
				ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
				defer cancel()
				err := f(ctx, i)
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					counts[name][op].ok++
				} else if dup != 0 && isCode(err, dup) {
					counts[name][op].twice++
				}
				return err
			})
		}
		struck := make(chan error, 1)
		phase := time.Now()
		go func() {
			time.Sleep(5 * time.Millisecond)
			defer func() { t.Logf("%s struck after %v", fault, time.Since(phase)) }()
			if fault == "blackhole" {
				bad.Proxy().Blackhole(true)
				struck <- nil
			} else {
				struck <- bad.Kill()
			}
		}()
		var wg sync.WaitGroup
		for name, k := range clients {
			wg.Add(1)
			go func(name string, k client.KeysAPI) {
				defer wg.Done()
				do(name, "create", client.ErrorCodeNodeExist, func(ctx context.Context, i int) error {
					_, err := k.Create(ctx, fmt.Sprintf("/cr/%s/%s/k%d", fault, name, i), "v")
					return err
				})
				do(name, "delete", client.ErrorCodeKeyNotFound, func(ctx context.Context, i int) error {
					_, err := k.Delete(ctx, fmt.Sprintf("/del/%s/%s/k%d", fault, name, i), nil)
					return err
				})
				do(name, "inorder", 0, func(ctx context.Context, i int) error {
					_, err := k.CreateInOrder(ctx, fmt.Sprintf("/ord/%s/%s", fault, name), "v", nil)
					return err
				})
				t.Logf("%s done after %v", name, time.Since(phase))
			}(name, k)
		}
		wg.Wait()
		if err := <-struck; err != nil {
			t.Fatal(err)
		}
		switch fault {
		case "blackhole":
			bad.Proxy().Blackhole(false)
		case "kill":
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := bad.Restart(ctx)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := cl.WaitSynced(ctx); err != nil {
			t.Fatal(err)
		}
		applied := map[string]map[string]int{}
		for name := range clients {
			applied[name] = map[string]int{
				"create":  countKeys(t, ctx, admin, fmt.Sprintf("/cr/%s/%s", fault, name)),
				"delete":  n - countKeys(t, ctx, admin, fmt.Sprintf("/del/%s/%s", fault, name)),
				"inorder": countKeys(t, ctx, admin, fmt.Sprintf("/ord/%s/%s", fault, name)),
			}
		}
		cancel()
		for _, op := range []string{"create", "delete", "inorder"} {
			b, s := counts["balanced"][op], counts["stock"][op]
			ba, sa := applied["balanced"][op], applied["stock"][op]
			if op == "inorder" {
				b.twice, s.twice = max(0, ba-n), max(0, sa-n)
			}
			t.Logf("%s, %s ×%d: balanced %d ok, %d applied, %d applied twice; stock %d ok, %d applied, %d applied twice",
				fault, op, n, b.ok, ba, b.twice, s.ok, sa, s.twice)
			if b.twice > s.twice || b.twice > 0 {
				t.Errorf("%s under %s: applied twice %d times with the balancing transport, %d with the stock client", op, fault, b.twice, s.twice)
			}
			if ba > n || ba < b.ok {
				t.Errorf("%s under %s: %d applied for %d calls, %d reported ok", op, fault, ba, n, b.ok)
			}
		}
	}
	s := c.Transport().Stats()
	t.Logf("balancing transport: %+v", s)
	if s.Attempts-s.Requests != s.Reissued+s.QuorumFallbacks {
		t.Fatalf("the transport sent %d requests for %d calls; only the monotonic-read guard may re-send (%d), and only reads",
			s.Attempts, s.Requests, s.Reissued+s.QuorumFallbacks)
	}
}

// countKeys counts the keys under dir with a quorum read.
func countKeys(t *testing.T, ctx context.Context, kapi client.KeysAPI, dir string) int {
	t.Helper()
	r, err := kapi.Get(ctx, dir, &client.GetOptions{Recursive: true, Quorum: true})
	if isCode(err, client.ErrorCodeKeyNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(r.Node.Nodes)
}
