package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
	"github.com/etcdbalance/etcdbalance-go/internal/faultproxy"
	"github.com/etcdbalance/etcdbalance-go/internal/v2cluster"
)

// target is a cluster the policies of one protocol run against.
type target struct {
	v2        bool
	names     []string // member names, in member order
	endpoints []string // what clients dial: host:port (v3) or http://host:port (v2)
	// direct are the members' own client addresses, past the proxies, for
	// setup and control traffic that must neither meet the faults nor be
	// counted; the same as endpoints for an external cluster.
	direct  []string
	proxies []*faultproxy.Proxy // nil for an external cluster
	prefix  string              // the listed "directory", ending in "/"
	keys    []string
	// external clusters are someone else's: the harness writes only under
	// its own prefix, removes it at the end and never compacts.
	external bool

	leader  func(ctx context.Context) (int, error)
	compact func(ctx context.Context) error // nil: nothing to do
	cleanup func(ctx context.Context) error // removes the harness's keys; nil: nothing to do
	closeFn func() error
}

// faultable reports whether faults can be injected (proxies exist).
func (t *target) faultable() bool { return t.proxies != nil }

// Key layout: the pods of one namespace, as the apiserver stores them.
const (
	podPrefix      = "/registry/pods/default/"
	externalPrefix = "/etcdbalance-bench" // prepended on clusters the harness does not own
	valueSize      = 1024
)

func keyNames(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%spod-%05d", prefix, i)
	}
	return keys
}

// podValue returns a value of valueSize printable bytes (JSON-safe, so v2
// answers are the same size as v3 ones plus JSON framing), varied by seed.
func podValue(seed int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	v := make([]byte, valueSize)
	x := uint32(seed)*2654435761 + 1
	for i := range v {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		v[i] = alphabet[x%uint32(len(alphabet))]
	}
	return v
}

// startV3 starts the in-process cluster, or connects to the external one,
// and writes the keys.
func startV3(ctx context.Context, o *options) (*target, error) {
	t := &target{prefix: podPrefix}
	if len(o.endpoints) > 0 {
		t.external = true
		t.prefix = externalPrefix + podPrefix
		t.endpoints = o.endpoints
		t.direct = o.endpoints
		t.names = append(t.names, o.endpoints...)
		t.leader = func(ctx context.Context) (int, error) { return v3Leader(ctx, t.direct) }
		t.closeFn = func() error { return nil }
	} else {
		c, err := etcdcluster.Start(ctx, etcdcluster.Config{Size: o.members})
		if err != nil {
			return nil, err
		}
		for _, m := range c.Members() {
			t.names = append(t.names, m.Name())
			t.endpoints = append(t.endpoints, m.ClientAddr())
			t.direct = append(t.direct, m.DirectAddr())
			t.proxies = append(t.proxies, m.Proxy())
		}
		t.leader = c.WaitLeader
		t.closeFn = c.Close
		t.compact = func(ctx context.Context) error { return compactV3(ctx, t.direct) }
	}
	t.keys = keyNames(t.prefix, o.keys)
	if err := loadV3(ctx, t.direct, t.keys); err != nil {
		_ = t.closeFn()
		return nil, err
	}
	if t.external {
		t.cleanup = func(ctx context.Context) error { return deletePrefixV3(ctx, t.direct, externalPrefix+"/") }
	}
	return t, nil
}

// controlV3 is a plain client for setup, on the direct addresses.
func controlV3(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// loadV3 writes every key, 100 to a transaction (etcd's default limit is
// 128 operations), so that a few thousand keys take well under a second.
func loadV3(ctx context.Context, endpoints, keys []string) error {
	cli, err := controlV3(endpoints)
	if err != nil {
		return err
	}
	defer cli.Close()
	const batch = 100
	for i := 0; i < len(keys); i += batch {
		var ops []clientv3.Op
		for j := i; j < min(i+batch, len(keys)); j++ {
			ops = append(ops, clientv3.OpPut(keys[j], string(podValue(j))))
		}
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.Txn(tctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("writing the keys: %w", err)
		}
	}
	return nil
}

// compactV3 drops the history that the updates of the last run left, so
// that every policy starts on the same keyspace.
func compactV3(ctx context.Context, endpoints []string) error {
	cli, err := controlV3(endpoints)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "compact-probe")
	if err != nil {
		return fmt.Errorf("compaction: %w", err)
	}
	_, err = cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	if err != nil && !strings.Contains(err.Error(), "compacted") {
		return fmt.Errorf("compaction: %w", err)
	}
	return nil
}

func deletePrefixV3(ctx context.Context, endpoints []string, prefix string) error {
	cli, err := controlV3(endpoints)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = cli.Delete(ctx, prefix, clientv3.WithPrefix())
	return err
}

// v3Leader asks every member for its status and returns the index of the
// one that reports itself leader.
func v3Leader(ctx context.Context, endpoints []string) (int, error) {
	cli, err := controlV3(endpoints)
	if err != nil {
		return -1, err
	}
	defer cli.Close()
	var errs []error
	for i, ep := range endpoints {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Leader == st.Header.MemberId {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no member reports itself leader: %w", errors.Join(errs...))
}

// startV2 starts the etcd 3.5 cluster that serves the v2 API, or connects
// to an external one, and writes the keys.
func startV2(ctx context.Context, o *options) (*target, error) {
	t := &target{v2: true, prefix: podPrefix}
	if len(o.v2Endpoints) > 0 {
		t.external = true
		t.prefix = externalPrefix + podPrefix
		t.endpoints = o.v2Endpoints
		t.direct = o.v2Endpoints
		for _, ep := range o.v2Endpoints {
			u, _ := url.Parse(ep)
			t.names = append(t.names, u.Host)
		}
		t.leader = func(ctx context.Context) (int, error) { return v2Leader(ctx, t.direct) }
		t.closeFn = func() error { return nil }
	} else {
		if _, err := v2cluster.Binary(ctx); err != nil {
			return nil, err
		}
		c, err := v2cluster.Start(ctx, v2cluster.Config{Size: o.members})
		if err != nil {
			return nil, err
		}
		for _, m := range c.Members() {
			t.names = append(t.names, m.Name())
			t.endpoints = append(t.endpoints, m.URL())
			t.direct = append(t.direct, m.DirectURL())
			t.proxies = append(t.proxies, m.Proxy())
		}
		t.leader = c.Leader
		t.closeFn = c.Close
	}
	t.keys = keyNames(t.prefix, o.keys)
	if err := loadV2(ctx, t.direct, t.keys); err != nil {
		_ = t.closeFn()
		return nil, err
	}
	if t.external {
		t.cleanup = func(ctx context.Context) error { return deleteDirV2(ctx, t.direct, externalPrefix) }
	}
	return t, nil
}

// controlV2 is a plain v2 client for setup; call the returned function to
// close its idle connections when done.
func controlV2(endpoints []string) (client.KeysAPI, func(), error) {
	tr := newHTTPTransport(16)
	c, err := client.New(client.Config{Endpoints: endpoints, Transport: tr})
	if err != nil {
		return nil, nil, err
	}
	return client.NewKeysAPI(c), tr.CloseIdleConnections, nil
}

// loadV2 writes every key, 16 at a time: the v2 API has no transactions.
func loadV2(ctx context.Context, endpoints, keys []string) error {
	kapi, done, err := controlV2(endpoints)
	if err != nil {
		return err
	}
	defer done()
	const workers = 16
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := kapi.Set(sctx, keys[i], string(podValue(i)), nil)
				cancel()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("writing the keys (v2): %w", err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range keys {
		next <- i
	}
	close(next)
	wg.Wait()
	return firstErr
}

func deleteDirV2(ctx context.Context, endpoints []string, dir string) error {
	kapi, done, err := controlV2(endpoints)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = kapi.Delete(ctx, dir, &client.DeleteOptions{Recursive: true, Dir: true})
	return err
}

// v2Leader finds the leader of an external v2 cluster among endpoints.
func v2Leader(ctx context.Context, endpoints []string) (int, error) {
	tr := newHTTPTransport(2)
	defer tr.CloseIdleConnections()
	c, err := client.New(client.Config{Endpoints: endpoints, Transport: tr})
	if err != nil {
		return -1, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := client.NewMembersAPI(c).Leader(ctx)
	if err != nil {
		return -1, err
	}
	for i, ep := range endpoints {
		for _, u := range m.ClientURLs {
			if strings.TrimSuffix(u, "/") == ep {
				return i, nil
			}
		}
	}
	return -1, fmt.Errorf("leader %s (%v) is not among the endpoints", m.Name, m.ClientURLs)
}
