package etcdbalance_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// BenchmarkWrites compares writes with leader routing (the default) and
// without it (WithLeaderWrites(false): writes spread by load over the
// members, and a follower forwards each to the leader), on one 3-member
// in-process cluster, 16 Puts in flight. It reports the throughput
// (writes/s), the latency median and 99th percentile, and the share of the
// writes that reached the leader directly (counted at its proxy). Run it
// without -race:
//
//	go test -run '^$' -bench BenchmarkWrites -benchtime 4000x -count 3 ./tests/etcdbalance/
//
// The members talk over loopback, so the hop a follower saves is short;
// see the package doc for numbers.
func BenchmarkWrites(b *testing.B) {
	c := startCluster(b, etcdcluster.Config{Size: 3})
	ctx := context.Background()
	leader := newBalanced(b, clientConfig(c.Endpoints()))
	spread := newBalanced(b, clientConfig(c.Endpoints()), etcdbalance.WithLeaderWrites(false))
	for _, cli := range []*clientv3.Client{leader, spread} {
		waitFor(b, 30*time.Second, "the view to know the leader", func() bool { return viewOf(b, cli).Leader != "" })
	}
	// A fresh cluster gets slower as its database grows: warm it up, then
	// alternate the two ways, so that neither gets the fresh cluster.
	hammer(ctx, 16, 5000, putOp(leader, "bench/warm"))
	type way struct {
		name string
		cli  *clientv3.Client
	}
	var ways []way
	for range 2 {
		ways = append(ways, way{"leader", leader}, way{"spread", spread})
	}
	for _, w := range ways {
		cli := w.cli
		b.Run(w.name, func(b *testing.B) {
			lead, err := c.WaitLeader(ctx)
			if err != nil {
				b.Fatal(err)
			}
			ms := c.Members()
			before := requests(b, ms, cli)

			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
			var workers atomic.Int64
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				w, i := workers.Add(1), 0
				for pb.Next() {
					t0 := time.Now()
					if _, err := cli.Put(ctx, fmt.Sprintf("bench/%d/%d", w, i), "v"); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t0))
					i++
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			b.StopTimer()
			d := sub(requests(b, ms, cli), before)
			var total int64
			for _, v := range d {
				total += v
			}
			slices.Sort(lat)
			q := func(p float64) float64 {
				return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond)
			}
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "writes/s")
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(100*float64(d[lead])/float64(total), "%leader")
		})
	}
}
