package main

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The job-storm scenario writes the way an apiserver does in a
// Kubernetes job storm: each object is created with a Txn that fails if
// the key exists, and updated by compare-and-swap on its mod_revision
// (GuaranteedUpdate), re-reading and retrying once when another writer
// got there first.
const (
	stormJobs     = "jobs/" // under the target's prefix, so the watches see every write
	stormHotKeys  = 16      // Job objects that many workers update: the conflicts
	stormOwnKeys  = 16      // a worker updates the last objects it created
	stormOwnShare = 0.75    // of updates, on the worker's own objects
	stormLeaseTTL = 30      // seconds; granted leases are left to expire
	keepAliveTTL  = 10      // seconds; leases kept alive for the session
)

// stormShared is what the workers of one session share: unique names and
// the last mod_revision seen of the hot keys, which a worker may find
// stale because another updated the key since.
type stormShared struct {
	prefix string // of created objects: target prefix + stormJobs + policy name + "-"
	hot    string // of the hot keys
	seq    atomic.Int64
	mu     sync.Mutex
	revs   map[string]int64
	// CAS bookkeeping, read after each measurement.
	retries, conflicts atomic.Int64
}

func newStormShared(prefix, policy string) *stormShared {
	p := prefix + stormJobs + policy + "-"
	return &stormShared{prefix: p, hot: p + "hot-", revs: map[string]int64{}}
}

func (sh *stormShared) rev(key string) int64 {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.revs[key]
}

func (sh *stormShared) saw(key string, rev int64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.revs[key] = max(sh.revs[key], rev)
}

// stormWorker is one worker's memory of the objects it created.
type stormWorker struct {
	cli *clientv3.Client
	sh  *stormShared
	own [stormOwnKeys]struct {
		key string
		rev int64
	}
	owned int // objects created, the ring's fill
}

// do sends one job-storm operation. measured says whether a CAS retry or
// conflict is counted.
func (w *stormWorker) do(ctx context.Context, o op, rng *rand.Rand, value string, measured bool) error {
	switch o {
	case opCreate:
		key := w.sh.prefix + strconv.FormatInt(w.sh.seq.Add(1), 10)
		resp, err := w.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, value)).Commit()
		if err == nil && resp.Succeeded {
			slot := &w.own[w.owned%stormOwnKeys]
			slot.key, slot.rev = key, resp.Header.Revision
			w.owned++
		}
		return err
	case opUpdate:
		return w.update(ctx, rng, value, measured)
	case opGrant:
		_, err := w.cli.Grant(ctx, stormLeaseTTL)
		return err
	}
	panic("stormWorker.do: not a job-storm operation: " + o.String())
}

// update is a compare-and-swap on an object the worker created, or on a
// hot key shared with the other workers.
func (w *stormWorker) update(ctx context.Context, rng *rand.Rand, value string, measured bool) error {
	var key string
	var rev int64
	own := -1
	if w.owned > 0 && rng.Float64() < stormOwnShare {
		own = rng.IntN(min(w.owned, stormOwnKeys))
		key, rev = w.own[own].key, w.own[own].rev
	} else {
		key = w.sh.hot + strconv.Itoa(rng.IntN(stormHotKeys))
		rev = w.sh.rev(key)
	}
	for attempt := 0; ; attempt++ {
		resp, err := w.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, value)).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			w.remember(own, key, resp.Header.Revision)
			return nil
		}
		if attempt == 1 {
			// Lost twice: the apiserver would go on; one retry is what
			// the scenario models. An answer, not an error.
			if measured {
				w.sh.conflicts.Add(1)
			}
			return nil
		}
		if measured {
			w.sh.retries.Add(1)
		}
		g, err := w.cli.Get(ctx, key)
		if err != nil {
			return err
		}
		rev = 0
		if len(g.Kvs) > 0 {
			rev = g.Kvs[0].ModRevision
		}
	}
}

func (w *stormWorker) remember(own int, key string, rev int64) {
	if own >= 0 {
		w.own[own].rev = rev
		return
	}
	w.sh.saw(key, rev)
}

// keepAlive grants n leases and keeps them alive on one stream of its own
// until ctx ends, as an apiserver keeps its master and event leases,
// counting the answers.
func keepAlive(ctx context.Context, cli *clientv3.Client, n int, answers *atomic.Int64) {
	l := clientv3.NewLease(cli)
	defer l.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	// A failed grant leaves fewer leases alive; the channels of those
	// granted close when ctx ends.
	for range n {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		g, err := l.Grant(gctx, keepAliveTTL)
		cancel()
		if err != nil {
			break
		}
		ch, err := l.KeepAlive(ctx, g.ID)
		if err != nil {
			break
		}
		wg.Go(func() {
			for range ch {
				answers.Add(1)
			}
		})
	}
	<-ctx.Done()
}
