package etcdbalance_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

func totalPicks(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	var n int64
	for _, s := range mustStats(t, cli) {
		n += s.Picks
	}
	return n
}

// TestClientLifecycle checks, on one cluster, what happens around the
// engine rather than inside it: per-call pins, throwaway connections,
// grpc's idle mode, and the registry entry's end.
func TestClientLifecycle(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	eps := c.Endpoints()
	ctx := context.Background()

	t.Run("WithMember pins calls", func(t *testing.T) {
		// No cluster view: the proxies count the pinned calls alone.
		cli := newBalanced(t, clientConfig(eps), etcdbalance.WithClusterView(-1))
		if _, err := cli.Put(ctx, "pin", "v"); err != nil {
			t.Fatal(err)
		}
		ms := c.Members()
		for i, m := range ms {
			before := proxyStreams(ms)
			pctx := etcdbalance.WithMember(ctx, "http://"+m.ClientAddr())
			if r := hammer(pctx, 4, 40, getOp(cli, "pin", mixed)); r.fail.Load() != 0 {
				t.Fatalf("pinned Gets failed: %v", r)
			}
			d := sub(proxyStreams(ms), before)
			for j, v := range d {
				if (j == i) != (v >= 40) || (j != i && v != 0) {
					t.Errorf("40 Gets pinned to member %d reached the members %v", i, d)
					break
				}
			}
		}
		// An unknown member fails the call at once, naming the address.
		gctx, cancel := context.WithTimeout(etcdbalance.WithMember(ctx, "127.0.0.1:1"), 10*time.Second)
		defer cancel()
		if _, err := cli.Get(gctx, "pin"); status.Code(err) != codes.InvalidArgument || !errorContains(err, `"127.0.0.1:1" is not one of the client's endpoints`) {
			t.Errorf("Get pinned to an unknown member: %v, want InvalidArgument naming it", err)
		}
	})

	t.Run("throwaway connections do not touch the engine", func(t *testing.T) {
		cli := newBalanced(t, clientConfig(eps))
		if _, err := cli.Get(ctx, "x"); err != nil {
			t.Fatal(err)
		}
		// Maintenance.Status dials a new connection to one endpoint with
		// the client's dial options, so with our balancer config too.
		for _, ep := range eps {
			if _, err := cli.Status(ctx, ep); err != nil {
				t.Fatalf("Status(%s): %v", ep, err)
			}
		}
		if st := mustStats(t, cli); len(st) != len(eps) {
			t.Errorf("after Status calls the client's engine has %d members, want %d:%s", len(st), len(eps), formatStats(st))
		}
		if r := hammer(ctx, 8, 300, getOp(cli, "x", mixed)); r.fail.Load() != 0 {
			t.Errorf("Gets after Status calls: %v", r)
		}
	})

	t.Run("engine survives idle mode", func(t *testing.T) {
		cfg := clientConfig(eps)
		cfg.DialOptions = []grpc.DialOption{grpc.WithIdleTimeout(200 * time.Millisecond)}
		cli := newBalanced(t, cfg)
		if r := hammer(ctx, 4, 200, getOp(cli, "x", mixed)); r.fail.Load() != 0 {
			t.Fatal(r)
		}
		picks := totalPicks(t, cli)
		conn := cli.ActiveConnection()
		// An idle channel has closed its balancer: the calls below run on a
		// new one.
		waitFor(t, 30*time.Second, "the channel to go idle", func() bool { return conn.GetState() == connectivity.Idle })
		if r := hammer(ctx, 4, 200, getOp(cli, "x", mixed)); r.fail.Load() != 0 {
			t.Fatal(r)
		}
		if got := totalPicks(t, cli); got < picks+200 {
			t.Errorf("after the rebuild the engine counts %d picks, want ≥ %d: statistics were lost", got, picks+200)
		}
	})

	t.Run("Stats after Close", func(t *testing.T) {
		// That the engine is freed too is a unit test of the registry.
		cli, err := etcdbalance.New(clientConfig(eps))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Get(ctx, "x"); err != nil {
			t.Fatal(err)
		}
		if _, err := etcdbalance.Stats(cli); err != nil {
			t.Fatal(err)
		}
		if err := cli.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := etcdbalance.Stats(cli); !errors.Is(err, etcdbalance.ErrClientClosed) {
			t.Errorf("Stats after Close: %v, want ErrClientClosed", err)
		}
	})

	t.Run("Stats of other clients", func(t *testing.T) {
		if _, err := etcdbalance.Stats(nil); !errors.Is(err, etcdbalance.ErrNotBalanced) {
			t.Errorf("Stats(nil): %v", err)
		}
		stock := newStock(t, eps, "")
		if _, err := etcdbalance.Stats(stock); !errors.Is(err, etcdbalance.ErrNotBalanced) {
			t.Errorf("Stats of a stock client: %v", err)
		}
	})
}
