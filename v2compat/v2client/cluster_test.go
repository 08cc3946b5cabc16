package v2client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v2"

	"github.com/etcdbalance/etcdbalance-go/internal/testcerts"
	"github.com/etcdbalance/etcdbalance-go/internal/v2cluster"
	"github.com/etcdbalance/etcdbalance-go/v2compat"
	"github.com/etcdbalance/etcdbalance-go/v2compat/v2client"
)

// Writes land on the leader, counted at the proxies. Quorum reads do not:
// they are spread like reads (see package v2compat).
func TestWritesLandOnLeader(t *testing.T) {
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3})
	kapi, c := balanced(t, cl, client.Config{})
	li := waitLeader(t, cl, c.Transport())
	const writes, quorums = 300, 300
	resetProxies(cl)
	res := run(writes, 8, func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := kapi.Set(ctx, fmt.Sprintf("/lead/k%d", i%10), "v", nil)
		return err
	})
	if res.failed > 0 {
		t.Fatalf("%d writes failed", res.failed)
	}
	counts := proxyCounts(cl, writes)
	t.Logf("%d writes: requests per member %v, leader m%d", writes, counts, li)
	for i, n := range counts {
		if i == li && n < writes {
			t.Fatalf("the leader got %d of %d writes", n, writes)
		}
		// Only the leader lookups (one every ~5 s) may reach followers.
		if i != li && n > 5 {
			t.Fatalf("follower m%d got %d requests", i, n)
		}
	}

	resetProxies(cl)
	res = run(quorums, 8, func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := kapi.Get(ctx, "/lead/k0", &client.GetOptions{Quorum: true})
		return err
	})
	if res.failed > 0 {
		t.Fatalf("%d quorum reads failed", res.failed)
	}
	counts = proxyCounts(cl, quorums)
	t.Logf("%d quorum reads: requests per member %v", quorums, counts)
	for i, n := range counts {
		if n < quorums/20 {
			t.Fatalf("m%d got %d of %d quorum reads: they do not spread", i, n, quorums)
		}
	}
}

// The monotonic-read guard: with a follower cut off from its peers, writes
// go on elsewhere and that follower answers reads from a store that falls
// behind. With the guard on, no read returns an index lower than one
// already seen by any reader or writer of the client; with it off, some do.
func TestMonotonicReadsWithLaggingMember(t *testing.T) {
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3})
	admin := stock(t, cl, client.Config{}, "")
	seed(t, cl, admin, "/mono", 1)
	cut := cl.Member(follower(t, cl))
	if err := cut.CutPeers(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cut.MendPeers(); err != nil {
			t.Error(err)
		}
	}()
	for _, guard := range []bool{true, false} {
		kapi, c := balanced(t, cl, client.Config{HeaderTimeoutPerRequest: 2 * time.Second}, v2compat.WithMonotonicReads(guard))
		// Writes go to the leader once it is known; a write sent to the
		// cut-off member would wait for its header timeout.
		waitLeader(t, cl, c.Transport())
		regressions, reads := monotonicRun(t, kapi)
		s := c.Transport().Stats()
		t.Logf("guard %v, m%d cut off: %d reads, %d regressions; transport %+v", guard, cut.Index(), reads, regressions, s)
		switch {
		case guard && regressions > 0:
			t.Fatalf("%d reads went back in time with the guard on", regressions)
		case guard && s.StaleAnswers == 0:
			t.Fatal("the cut-off member never answered stale: the setup did not test the guard")
		case !guard && regressions == 0:
			t.Fatal("no regression with the guard off: the setup did not produce any")
		}
		c.Close()
	}
}

// monotonicRun writes and reads one key concurrently and counts the reads
// that returned an index lower than the highest one any operation had
// returned before that read was sent.
func monotonicRun(t *testing.T, kapi client.KeysAPI) (regressions, reads int64) {
	t.Helper()
	var highest uint64
	raise := func(v uint64) {
		for {
			h := atomic.LoadUint64(&highest)
			if v <= h || atomic.CompareAndSwapUint64(&highest, h, v) {
				return
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	writes := 0
	defer func() { t.Logf("%d writes during the reads", writes) }()
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			writes++
			r, err := kapi.Set(ctx, "/mono/k0", fmt.Sprint(i), nil)
			if err != nil {
				t.Errorf("write: %v", err)
				return
			}
			raise(r.Index)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	res := run(1500, 8, func(int) error {
		before := atomic.LoadUint64(&highest)
		r, err := kapi.Get(ctx, "/mono/k0", nil)
		if err != nil {
			return err
		}
		if r.Index < before {
			atomic.AddInt64(&regressions, 1)
		}
		raise(r.Index)
		return nil
	})
	close(stop)
	wg.Wait()
	if res.failed > 0 {
		t.Fatalf("%d reads failed", res.failed)
	}
	return regressions, int64(res.ok)
}

// TLS with certificates made for the test: reads and writes spread over
// members served with TLS, and a client that does not trust the CA fails.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	pool := writeTLSFiles(t, dir)
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3, TLS: &v2cluster.TLSFiles{
		CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server-key.pem"),
	}})
	for _, ep := range cl.Endpoints() {
		if !strings.HasPrefix(ep, "https://") {
			t.Fatalf("endpoint %s is not https", ep)
		}
	}
	inner := newInner(t)
	inner.TLSClientConfig = &tls.Config{RootCAs: pool}
	kapi, c := balanced(t, cl, client.Config{Transport: inner})
	waitLeader(t, cl, c.Transport())
	seed(t, cl, kapi, "/tls", 20)
	res := getAll(kapi, "/tls", 1500)
	t.Logf("1500 Gets over TLS: %v", res)
	if res.failed > 0 {
		t.Fatalf("%d Gets failed", res.failed)
	}
	// The proxies do not parse TLS, so the spread is read from the engine.
	for _, s := range c.Transport().Stats().Members {
		t.Logf("%s: %d picks", s.Addr, s.Picks)
		if s.Picks < 150 {
			t.Fatalf("%s got %d picks: reads did not spread", s.Addr, s.Picks)
		}
	}

	untrusting, _ := balanced(t, cl, client.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := untrusting.Get(ctx, "/tls/k0", nil)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the CA got %v, want a certificate error", err)
	}
}

// writeTLSFiles writes a CA and a server certificate for 127.0.0.1 into
// dir and returns a pool that trusts the CA.
func writeTLSFiles(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	ca, err := testcerts.NewCA("v2client test CA")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue(testcerts.Leaf{
		CommonName: "etcd member",
		Hosts:      []string{"127.0.0.1"},
		Server:     true,
		Client:     true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := server.WriteFiles(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")); err != nil {
		t.Fatal(err)
	}
	return ca.Pool()
}

// Sync, AutoSync and SetEndpoints keep the transport's endpoint set equal
// to the client's.
func TestSyncKeepsTransportInStep(t *testing.T) {
	cl := v2cluster.StartTB(t, v2cluster.Config{Size: 3})
	kapi, c := balanced(t, cl, client.Config{})
	inStep := func(what string, want []string) {
		t.Helper()
		got, tr := sorted(c.Endpoints()), sorted(c.Transport().Endpoints())
		if strings.Join(got, " ") != strings.Join(tr, " ") {
			t.Fatalf("%s: client endpoints %v, transport endpoints %v", what, got, tr)
		}
		if want != nil && strings.Join(got, " ") != strings.Join(sorted(want), " ") {
			t.Fatalf("%s: endpoints %v, want %v", what, got, want)
		}
	}
	var direct []string
	for _, m := range cl.Members() {
		direct = append(direct, m.DirectURL())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Sync replaces the endpoints with the members' advertised URLs.
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	inStep("after Sync", direct)
	if _, err := kapi.Set(ctx, "/sync/k", "v", nil); err != nil {
		t.Fatal(err)
	}
	before := c.Transport().Stats()
	for i := 0; i < 30; i++ {
		if _, err := kapi.Get(ctx, "/sync/k", nil); err != nil {
			t.Fatal(err)
		}
	}
	if s := c.Transport().Stats(); s.Requests-before.Requests != 30 || s.PassedThrough != before.PassedThrough {
		t.Fatalf("after Sync, requests were not balanced: %+v", s)
	}

	if err := c.SetEndpoints(cl.Endpoints()); err != nil {
		t.Fatal(err)
	}
	inStep("after SetEndpoints", cl.Endpoints())
	err := c.SetEndpoints([]string{cl.Endpoints()[0], "ftp://nope:21"})
	if err == nil || !strings.Contains(err.Error(), `"ftp://nope:21"`) {
		t.Fatalf("SetEndpoints with a bad URL: %v", err)
	}
	inStep("after a refused SetEndpoints", cl.Endpoints())

	actx, acancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = c.AutoSync(actx, 50*time.Millisecond)
	acancel()
	if err != context.DeadlineExceeded {
		t.Fatalf("AutoSync returned %v", err)
	}
	inStep("after AutoSync", direct)
	if err := c.AutoSync(ctx, 0); err == nil || !strings.Contains(err.Error(), "interval 0s") {
		t.Fatalf("AutoSync with interval 0: %v", err)
	}
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return s
}

// New reports bad configuration with the bad value.
func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  client.Config
		opts []v2client.Option
		want string
	}{
		{client.Config{}, nil, "no endpoints"},
		{client.Config{Endpoints: []string{"unix:///run/etcd.sock"}}, nil, `"unix:///run/etcd.sock"`},
		{client.Config{Endpoints: []string{"http://a:1"}}, []v2client.Option{v2compat.WithMonotonicRetries(99)}, "monotonic retries 99"},
	} {
		c, err := v2client.New(tc.cfg, tc.opts...)
		if err == nil {
			c.(*v2client.Client).Close()
			t.Fatalf("%+v: New succeeded", tc.cfg)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("error %q does not contain %q", err, tc.want)
		}
	}
}
