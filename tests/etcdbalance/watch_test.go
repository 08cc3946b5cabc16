package etcdbalance_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// TestWatch runs on one cluster:
//
//   - spread: 30 watch streams, each on its own Watcher (one Watcher
//     multiplexes all its watches onto one gRPC stream), land at most
//     ceil(30/3)+1 = 11 on any member, by our Stats and at the proxies;
//   - restart: a watch keeps delivering every event, with no gap and no
//     duplicate by revision, while the member its stream is on is stopped
//     and restarted. clientv3 resumes the watch on another member from the
//     next revision by itself; the balancer only has to send the new
//     stream to a member that is up. (WithRequireLeader is not used: it
//     would end the watch, not move it, if the member lost its leader.)
func TestWatch(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	cli := newBalanced(t, clientConfig(c.Endpoints()))

	t.Run("spread", func(t *testing.T) {
		const n = 30
		ms := c.Members()
		// Watches go only to members known to be voters: wait until every
		// member has answered a probe, or a busy machine leaves one out of
		// the whole burst.
		waitFor(t, 60*time.Second, "every member verified", func() bool {
			v := viewOf(t, cli)
			for _, m := range v.Members {
				if !m.Verified {
					return false
				}
			}
			return len(v.Members) == len(ms)
		})
		before := requests(t, ms, cli)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var watchers []clientv3.Watcher
		defer func() {
			for _, w := range watchers {
				_ = w.Close()
			}
		}()
		for i := range n {
			w := clientv3.NewWatcher(cli)
			watchers = append(watchers, w)
			// WithCreatedNotify: the first response says the watch is set
			// up, so its stream is open.
			ch := w.Watch(ctx, fmt.Sprintf("spread/%d", i), clientv3.WithCreatedNotify())
			select {
			case r := <-ch:
				if !r.Created {
					t.Fatalf("watch %d: first response %+v, want created", i, r)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("watch %d: not created", i)
			}
		}
		perMember := map[string]int64{}
		var total int64
		for _, s := range memberStats(t, cli) {
			perMember[s.Addr] = s.Streams
			total += s.Streams
		}
		d := sub(requests(t, ms, cli), before)
		t.Logf("%d watch streams: engine %v, proxies %v", n, perMember, d)
		if total != n {
			t.Errorf("engine counts %d open streams, want %d", total, n)
		}
		for i, m := range ms {
			if s := perMember[m.ClientAddr()]; s > n/3+1 {
				t.Errorf("member %d has %d watch streams by our Stats, want ≤ %d", i, s, n/3+1)
			}
			if d[i] > n/3+1 {
				t.Errorf("member %d's proxy saw %d streams, want ≤ %d", i, d[i], n/3+1)
			}
		}
		for _, w := range watchers {
			_ = w.Close()
		}
		watchers = nil
		waitFor(t, 10*time.Second, "the streams to close", func() bool {
			for _, s := range memberStats(t, cli) {
				if s.Streams != 0 {
					return false
				}
			}
			return true
		})
	})

	t.Run("restart", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w := clientv3.NewWatcher(cli)
		defer w.Close()
		ch := w.Watch(ctx, "restart/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if r := <-ch; !r.Created {
			t.Fatalf("first response %+v, want created", r)
		}
		var on *etcdcluster.Member
		for _, m := range c.Members() {
			if memberStats(t, cli)[m.ClientAddr()].Streams == 1 {
				on = m
			}
		}
		if on == nil {
			t.Fatalf("no member has the watch stream:%s", formatStats(mustStats(t, cli)))
		}

		// The writer has its own client, so that its failures while the
		// member is down do not disturb the watcher's.
		wcli := newBalanced(t, clientConfig(c.Endpoints()))
		var written sync.Map // revision → key, of Puts that succeeded
		var lastWritten atomic.Int64
		wctx, stopWriter := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; wctx.Err() == nil; i++ {
				pctx, pcancel := context.WithTimeout(wctx, 5*time.Second)
				resp, err := wcli.Put(pctx, fmt.Sprintf("restart/%d", i), "v")
				pcancel()
				if err == nil {
					written.Store(resp.Header.Revision, true)
					lastWritten.Store(resp.Header.Revision)
				}
			}
		})

		// The collector checks every event as it comes.
		var mu sync.Mutex
		var revs []int64
		var errs []string
		var gotTo atomic.Int64
		collected := make(chan struct{})
		go func() {
			defer close(collected)
			for r := range ch {
				if err := r.Err(); err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
					continue
				}
				mu.Lock()
				for _, ev := range r.Events {
					revs = append(revs, ev.Kv.ModRevision)
					gotTo.Store(ev.Kv.ModRevision)
				}
				mu.Unlock()
			}
		}()
		events := func() int {
			mu.Lock()
			defer mu.Unlock()
			return len(revs)
		}
		progress := func(what string, n int) {
			t.Helper()
			from := events()
			waitFor(t, 60*time.Second, fmt.Sprintf("%d more events (%s)", n, what), func() bool { return events() >= from+n })
		}

		progress("before the stop", 50)
		if err := on.Stop(); err != nil {
			t.Fatal(err)
		}
		progress("while the member is down", 50)
		moved := false
		for addr, s := range memberStats(t, cli) {
			if addr != on.ClientAddr() && s.Streams == 1 {
				moved = true
			}
		}
		if !moved {
			t.Errorf("the watch stream did not move off the stopped member:%s", formatStats(mustStats(t, cli)))
		}
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		if err := on.Restart(rctx); err != nil {
			t.Fatal(err)
		}
		rcancel()
		progress("after the restart", 50)
		stopWriter()
		wg.Wait()
		last := lastWritten.Load()
		waitFor(t, 30*time.Second, fmt.Sprintf("the watch to reach revision %d", last), func() bool { return gotTo.Load() >= last })
		cancel()
		<-collected

		mu.Lock()
		defer mu.Unlock()
		if len(errs) > 0 {
			t.Logf("watch responses with errors: %v", errs)
		}
		for i := 1; i < len(revs); i++ {
			if revs[i] != revs[i-1]+1 {
				t.Errorf("event %d has revision %d after %d: gap or duplicate", i, revs[i], revs[i-1])
			}
		}
		seen := map[int64]bool{}
		for _, r := range revs {
			seen[r] = true
		}
		missing := 0
		written.Range(func(k, _ any) bool {
			if !seen[k.(int64)] {
				missing++
			}
			return true
		})
		if missing > 0 {
			t.Errorf("%d successful Puts never reached the watch", missing)
		}
		st, _ := etcdbalance.Stats(cli)
		t.Logf("%d events, revisions %d..%d, no gap, no duplicate; stream now:%s", len(revs), revs[0], revs[len(revs)-1], formatStats(st))
	})
}

func mustStats(t *testing.T, cli *clientv3.Client) []etcdbalance.MemberStats {
	t.Helper()
	st, err := etcdbalance.Stats(cli)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
