package etcdbalance_test

import (
	"context"
	"crypto/tls"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// TestTLS: members serve TLS through the proxies (which pass it through).
// A client that trusts the cluster's CA works against every member, each
// connection verified for the address it dials; a client that trusts
// another CA fails with an error that says why, within its call's
// deadline, instead of hanging.
func TestTLS(t *testing.T) {
	good, err := etcdcluster.GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, etcdcluster.Config{Size: 3, TLS: good})
	// One member by name, the others by IP address: the certificate
	// covers both, and each connection is verified for its own.
	var eps []string
	for i, ep := range c.Endpoints() {
		if i == 0 {
			ep = strings.Replace(ep, "127.0.0.1", "localhost", 1)
		}
		eps = append(eps, "https://"+ep)
	}
	ctx := context.Background()

	t.Run("right CA", func(t *testing.T) {
		tc, err := good.ClientTLS()
		if err != nil {
			t.Fatal(err)
		}
		// Record what every handshake verified.
		var mu sync.Mutex
		verified := map[string]int{}
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			mu.Lock()
			defer mu.Unlock()
			verified[cs.ServerName]++
			if len(cs.VerifiedChains) == 0 {
				t.Errorf("handshake for %q without a verified chain", cs.ServerName)
			}
			return nil
		}
		cfg := clientConfig(eps)
		cfg.TLS = tc
		cli := newBalanced(t, cfg)
		if _, err := cli.Put(ctx, "tls", "v"); err != nil {
			t.Fatal(err)
		}
		if r := hammer(ctx, 8, 600, getOp(cli, "tls", mixed)); r.fail.Load() != 0 {
			t.Errorf("Gets over TLS failed: %v", r)
		}
		st := mustStats(t, cli)
		if len(st) != len(eps) {
			t.Errorf("Stats lists %d members, want %d:%s", len(st), len(eps), formatStats(st))
		}
		for _, s := range st {
			if s.Picks == 0 || !s.Ready {
				t.Errorf("member %s not used over TLS:%s", s.Addr, formatStats(st))
			}
		}
		mu.Lock()
		defer mu.Unlock()
		t.Logf("handshakes verified by server name: %v", verified)
		// Go sends no server name for an IP address (SNI is for names), so
		// the handshakes by address show up under "".
		if verified["localhost"] == 0 || verified[""] < len(eps)-1 {
			t.Errorf("verified handshakes %v, want the named member under \"localhost\" and %d by address", verified, len(eps)-1)
		}
	})

	t.Run("wrong CA", func(t *testing.T) {
		other, err := etcdcluster.GenerateTLS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		tc, err := other.ClientTLS()
		if err != nil {
			t.Fatal(err)
		}
		cfg := clientConfig(eps)
		cfg.TLS = tc
		cli, err := etcdbalance.New(cfg)
		if err != nil {
			// A blocking dial may already report it; that is fine too.
			checkTLSError(t, err)
			return
		}
		defer cli.Close()
		done := make(chan error, 1)
		go func() {
			gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_, err := cli.Get(gctx, "tls")
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("Get succeeded with a CA that did not sign the members' certificate")
			}
			t.Logf("Get with the wrong CA: %v", err)
			checkTLSError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("Get with the wrong CA hangs past its deadline")
		}

		// For comparison: stock clientv3 waits out the deadline and
		// reports only that.
		stock, err := clientv3.New(cfg)
		if err != nil {
			t.Logf("stock clientv3 with the wrong CA: %v", err)
			return
		}
		defer stock.Close()
		gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err = stock.Get(gctx, "tls")
		t.Logf("stock clientv3 Get with the wrong CA: %v", err)
	})
}

func checkTLSError(t *testing.T, err error) {
	t.Helper()
	if msg := err.Error(); !strings.Contains(msg, "certificate") || !strings.Contains(msg, "authentication handshake failed") {
		t.Errorf("error %q does not say that the certificate check failed", msg)
	}
}
