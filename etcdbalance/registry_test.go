package etcdbalance

import (
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
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

// waitUntil polls cond for up to d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// unreachable is a client config whose endpoints nobody serves: clientv3
// dials lazily, so the client, its balancer and its engine exist, which is
// all the registry's bookkeeping needs.
func unreachable() clientv3.Config {
	return clientv3.Config{Endpoints: []string{"127.0.0.1:1", "127.0.0.1:2"}, Logger: zap.NewNop()}
}

// TestRegistryFreesEntries: New's engine is freed when its client closes,
// a DialOptions engine once the options and its connections are garbage,
// and throwaway channels add no entry.
func TestRegistryFreesEntries(t *testing.T) {
	t.Run("New", func(t *testing.T) {
		cli, err := New(unreachable(), WithClusterView(-1))
		if err != nil {
			t.Fatal(err)
		}
		e := reg.lookup(cli)
		if e == nil || !registered(e) {
			t.Fatal("the client's engine is not registered")
		}
		if err := cli.Close(); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 10*time.Second, "the registry entry to be freed", func() bool { return !registered(e) })
	})
	t.Run("DialOptions", func(t *testing.T) {
		var e *entry
		func() {
			cfg := unreachable()
			cfg.DialOptions = DialOptions()
			cli, err := clientv3.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			// A 3.7 client's channel starts idle: its balancer, and so its
			// entry, comes when it connects.
			cli.ActiveConnection().Connect()
			waitUntil(t, 10*time.Second, "the client's engine to be registered", func() bool {
				e = reg.lookup(cli)
				return e != nil
			})
			if _, err := Stats(cli); err != nil {
				t.Fatal(err)
			}
		}()
		waitUntil(t, 30*time.Second, "the registry entry to be freed", func() bool {
			runtime.GC()
			return !registered(e)
		})
	})
}

// TestMain checks that the tests leave no goroutine behind (views,
// registry cleanups, connections).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
