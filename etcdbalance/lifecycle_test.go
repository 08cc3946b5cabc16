package etcdbalance

import (
	"context"
	"errors"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// size reports how many engines are registered.
func (r *registry) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// registered reports whether e is still in the registry.
func registered(e *entry) bool {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	return reg.byID[e.id] == e
}

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
		cli := newBalanced(t, clientConfig(eps), WithClusterView(-1))
		if _, err := cli.Put(ctx, "pin", "v"); err != nil {
			t.Fatal(err)
		}
		ms := c.Members()
		for i, m := range ms {
			before := proxyStreams(ms)
			pctx := WithMember(ctx, "http://"+m.ClientAddr())
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
		gctx, cancel := context.WithTimeout(WithMember(ctx, "127.0.0.1:1"), 10*time.Second)
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
		size := reg.size()
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
		if n := reg.size(); n > size {
			t.Errorf("registry went from %d to %d entries", size, n)
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
		picks, built := totalPicks(t, cli), builds.Load()
		conn := cli.ActiveConnection()
		waitFor(t, 30*time.Second, "the channel to go idle", func() bool { return conn.GetState() == connectivity.Idle })
		if r := hammer(ctx, 4, 200, getOp(cli, "x", mixed)); r.fail.Load() != 0 {
			t.Fatal(r)
		}
		if builds.Load() == built {
			t.Fatal("the balancer was not rebuilt after idle mode")
		}
		if got := totalPicks(t, cli); got < picks+200 {
			t.Errorf("after the rebuild the engine counts %d picks, want ≥ %d: statistics were lost", got, picks+200)
		}
	})

	t.Run("New frees the engine on Close", func(t *testing.T) {
		cli, err := New(clientConfig(eps))
		if err != nil {
			t.Fatal(err)
		}
		e := reg.lookup(cli)
		if e == nil || !registered(e) {
			t.Fatal("the client's engine is not registered")
		}
		if _, err := cli.Get(ctx, "x"); err != nil {
			t.Fatal(err)
		}
		if _, err := Stats(cli); err != nil {
			t.Fatal(err)
		}
		if err := cli.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := Stats(cli); !errors.Is(err, ErrClientClosed) {
			t.Errorf("Stats after Close: %v, want ErrClientClosed", err)
		}
		waitFor(t, 10*time.Second, "the registry entry to be freed", func() bool { return !registered(e) })
	})

	t.Run("DialOptions engine is freed with its connection", func(t *testing.T) {
		var e *entry
		func() {
			cfg := clientConfig(eps)
			cfg.DialOptions = DialOptions()
			cli, err := clientv3.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Get(ctx, "x"); err != nil {
				t.Fatal(err)
			}
			if st := mustStats(t, cli); len(st) != len(eps) {
				t.Errorf("Stats lists %d members, want %d", len(st), len(eps))
			}
			if e = reg.lookup(cli); e == nil {
				t.Fatal("the client's engine is not registered")
			}
			if err := cli.Close(); err != nil {
				t.Fatal(err)
			}
		}()
		// The entry goes once nothing refers to the dial options any more.
		waitFor(t, 30*time.Second, "the registry entry to be freed", func() bool {
			runtime.GC()
			return !registered(e)
		})
	})

	t.Run("Stats of other clients", func(t *testing.T) {
		if _, err := Stats(nil); !errors.Is(err, ErrNotBalanced) {
			t.Errorf("Stats(nil): %v", err)
		}
		stock := newStock(t, eps, "")
		if _, err := Stats(stock); !errors.Is(err, ErrNotBalanced) {
			t.Errorf("Stats of a stock client: %v", err)
		}
	})
}
