package main

// Tests of the apiserver 1.7 etcd2 recipe against real etcd 3.5 members
// (internal/v2cluster: each member behind a fault proxy), with the v2
// client of that era's API (coreos/etcd/client 3.3.27, which re-sends a
// failed request on the next member like 3.1.5 does).

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	etcd2client "github.com/coreos/etcd/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbalance/etcdbalance-go/internal/testcerts"
	"github.com/etcdbalance/etcdbalance-go/internal/v2cluster"
	"github.com/etcdbalance/etcdbalance-go/v2compat"
)

// counting is an inner transport that records what the balancing
// transport sends to members and how they answer.
type counting struct {
	v2compat.CancelableTransport
	mu     sync.Mutex
	sent   map[string]int // "METHOD /path"
	hosts  map[string]int // member host -> requests under /v2/keys
	protos map[string]int // answers under /v2/keys by protocol
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.sent[r.Method+" "+r.URL.Path]++
	c.mu.Unlock()
	resp, err := c.CancelableTransport.RoundTrip(r)
	if err == nil && len(r.URL.Path) >= 8 && r.URL.Path[:8] == "/v2/keys" {
		c.mu.Lock()
		c.hosts[r.URL.Host]++
		c.protos[resp.Proto]++
		c.mu.Unlock()
	}
	return resp, err
}

func (c *counting) reset() {
	c.mu.Lock()
	c.sent, c.hosts, c.protos = map[string]int{}, map[string]int{}, map[string]int{}
	c.mu.Unlock()
}

func (c *counting) count(what string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent[what]
}

// recipeClient installs, as the shared transport for eps and the TLS
// files, one whose inner transport is newTransportForETCD2's wrapped in a
// counting; then it builds the client with the patched factory, which
// must get that same transport. The first Shared call's options count.
func recipeClient(t *testing.T, eps []string, cert, key, ca string, opts ...v2compat.Option) (etcd2client.KeysAPI, *v2compat.Transport, *counting) {
	t.Helper()
	cnt := &counting{}
	cnt.reset()
	tr, release, err := v2compat.Shared(eps, []string{cert, key, ca}, func() (v2compat.CancelableTransport, error) {
		inner, err := newTransportForETCD2(cert, key, ca)
		cnt.CancelableTransport = inner
		return cnt, err
	}, opts...)
	require.NoError(t, err)
	t.Cleanup(release)
	cli, tr2, release2, err := newETCD2Client(eps, cert, key, ca)
	require.NoError(t, err)
	t.Cleanup(release2)
	require.Same(t, tr, tr2, "the factory built a transport of its own")
	return etcd2client.NewKeysAPI(cli), tr, cnt
}

// With every member answering later than HeaderTimeout, a compare-and-swap
// is sent exactly once and succeeds, and a List is sent twice (the first
// try times out, the client's re-send waits for its answer), not to every
// member in turn.
func TestHeaderTimeoutNeverResendsWrites(t *testing.T) {
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3})
	eps := cl.Endpoints()
	const d = 300 * time.Millisecond
	kapi, tr, cnt := recipeClient(t, eps, "", "", "", v2compat.WithHeaderTimeout(d))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 20; i++ {
		_, err := kapi.Set(ctx, fmt.Sprintf("/recipe/list/k%02d", i), "v", nil)
		require.NoError(t, err)
	}
	first, err := kapi.Set(ctx, "/recipe/cas", "v1", nil)
	require.NoError(t, err)
	require.NoError(t, cl.WaitSynced(ctx))

	// Every round trip to every member now takes at least 2d.
	for _, m := range cl.Members() {
		m.Proxy().SetLatency(d, 0)
	}
	cnt.reset()
	list, err := kapi.Get(ctx, "/recipe/list", &etcd2client.GetOptions{Recursive: true, Sort: true})
	require.NoError(t, err)
	assert.Len(t, list.Node.Nodes, 20)
	lists := cnt.count("GET /v2/keys/recipe/list")
	t.Logf("List with every member slower than the header timeout: sent %d times to %d members", lists, len(eps))
	assert.Equal(t, 2, lists, "the List was sent %d times", lists)

	cnt.reset()
	cas, err := kapi.Set(ctx, "/recipe/cas", "v2", &etcd2client.SetOptions{PrevIndex: first.Node.ModifiedIndex})
	require.NoError(t, err, "a re-sent compare-and-swap fails against its own first copy")
	puts := cnt.count("PUT /v2/keys/recipe/cas")
	t.Logf("compare-and-swap: sent %d times, index %d -> %d", puts, first.Node.ModifiedIndex, cas.Node.ModifiedIndex)
	assert.Equal(t, 1, puts)
	// Nothing else writes: exactly one write was applied.
	assert.Equal(t, first.Node.ModifiedIndex+1, cas.Node.ModifiedIndex)
	st := tr.Stats()
	t.Logf("transport: %+v", st)
}

// Over TLS with HTTP/2 on the inner transport, as apiserver 1.7 sets it
// up, every read goes over HTTP/2 and the reads spread over every member,
// on a handful of connections.
func TestTLSHTTP2Spreads(t *testing.T) {
	files, err := testcerts.WriteDir(t.TempDir(), "legacy-v2 test CA", "etcd", "apiserver")
	require.NoError(t, err)
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3, TLS: &v2cluster.TLSFiles{
		CertFile: files.ServerCertFile, KeyFile: files.ServerKeyFile, TrustedCAFile: files.CAFile,
	}})
	eps := cl.Endpoints()
	require.Contains(t, eps[0], "https://")
	kapi, _, cnt := recipeClient(t, eps, files.ClientCertFile, files.ClientKeyFile, files.CAFile)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = kapi.Set(ctx, "/recipe/tls", "v", nil)
	require.NoError(t, err)
	require.NoError(t, cl.WaitSynced(ctx))
	cnt.reset()

	const n, conc = 900, 8
	next := make(chan struct{})
	errs := make(chan error, conc)
	var wg sync.WaitGroup
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if _, err := kapi.Get(ctx, "/recipe/tls", nil); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	close(errs)
	require.NoError(t, <-errs)

	cnt.mu.Lock()
	protos, hosts := cnt.protos, cnt.hosts
	cnt.mu.Unlock()
	conns := make([]int64, len(eps))
	for i, m := range cl.Members() {
		conns[i] = m.Proxy().Stats().Accepted
	}
	t.Logf("%d reads: answers by protocol %v, by member %v, connections per member %v", n, protos, hosts, conns)
	assert.Equal(t, map[string]int{"HTTP/2.0": n}, protos)
	for i, m := range cl.Members() {
		host := m.URL()[len("https://"):]
		assert.Greater(t, hosts[host], n/10, "member %d served %d of %d reads", i, hosts[host], n)
		// HTTP/2 multiplexes: a few connections per member since the
		// cluster started, not one per request in flight.
		assert.LessOrEqual(t, conns[i], int64(conc), "member %d", i)
	}
}

// Every storage resource of one apiserver (same server list, in any order,
// same TLS files) shares one transport; other TLS files get another; once
// all are released the next one is new.
func TestSharedPerServerListAndTLS(t *testing.T) {
	eps := []string{"http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"}
	rev := []string{eps[2], eps[0], eps[1]}
	var trs []*v2compat.Transport
	var releases []func()
	for i := 0; i < 40; i++ {
		list := eps
		if i%2 == 1 {
			list = rev
		}
		_, tr, release, err := newETCD2Client(list, "", "", "", v2compat.WithLeaderPollInterval(-1))
		require.NoError(t, err)
		trs = append(trs, tr)
		releases = append(releases, release)
	}
	for _, tr := range trs {
		require.Same(t, trs[0], tr)
	}
	files, err := testcerts.WriteDir(t.TempDir(), "other CA", "etcd", "apiserver")
	require.NoError(t, err)
	_, other, releaseOther, err := newETCD2Client(eps, "", "", files.CAFile, v2compat.WithLeaderPollInterval(-1))
	require.NoError(t, err)
	assert.NotSame(t, trs[0], other)
	releaseOther()
	for _, r := range releases {
		r()
		r() // a second call is a no-op
	}
	_, fresh, release, err := newETCD2Client(eps, "", "", "", v2compat.WithLeaderPollInterval(-1))
	require.NoError(t, err)
	defer release()
	assert.NotSame(t, trs[0], fresh, "a released transport was handed out again")
}
