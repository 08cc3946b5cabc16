package etcdbalance_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
	"github.com/etcdbalance/etcdbalance-go/internal/testcerts"
)

const rootPassword = "root-secret"

// authCluster starts a 3-member cluster with auth enabled (user root,
// password rootPassword) and returns it with a client config that logs
// in as root.
func authCluster(t *testing.T, cfg etcdcluster.Config) (*etcdcluster.Cluster, clientv3.Config) {
	t.Helper()
	c := startCluster(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.EnableAuth(ctx, rootPassword))
	// Without credentials the cluster refuses writes: auth is really on.
	anon := newStock(t, c.Endpoints(), "")
	_, err := anon.Put(ctx, "anon", "v")
	require.Error(t, err, "a client without credentials could write: auth is not on")
	t.Logf("without credentials: %v", err)
	cc := clientConfig(c.Endpoints())
	cc.Username, cc.Password = etcdcluster.RootUser, rootPassword
	return c, cc
}

// TestAuthNew: with auth enabled (root user and password), New with
// Username and Password works like clientv3.New with the same config:
// Put, Get and Watch succeed, and the cluster view finds the leader and
// verifies every member. Today New waits for the view inside
// clientv3.New's Authenticate and fails after DialTimeout.
func TestAuthNew(t *testing.T) {
	c, cfg := authCluster(t, etcdcluster.Config{Size: 3})
	exercise(t, "stock", newClientCfg(t, cfg))

	cli, err := etcdbalance.New(cfg)
	require.NoError(t, err, "New with Username/Password on an auth-enabled cluster")
	t.Cleanup(func() { _ = cli.Close() })
	exercise(t, "etcdbalance", cli)
	v := waitViewComplete(t, cli, c.Endpoints())
	t.Logf("view: leader %s after %d rounds", v.Leader, v.Rounds)
	st, err := etcdbalance.Stats(cli)
	require.NoError(t, err)
	assert.Len(t, st, 3, "Stats:%s", formatStats(st))
}

// TestAuthAttach: the same with clientv3.New, DialOptions and Attach.
func TestAuthAttach(t *testing.T) {
	c, cfg := authCluster(t, etcdcluster.Config{Size: 3})
	exercise(t, "stock", newClientCfg(t, cfg))

	cli := newDialOptionsClient(t, cfg)
	stop, err := etcdbalance.Attach(cli)
	require.NoError(t, err, "Attach on an auth-enabled cluster")
	defer stop()
	exercise(t, "etcdbalance", cli)
	v := waitViewComplete(t, cli, c.Endpoints())
	t.Logf("view: leader %s after %d rounds", v.Leader, v.Rounds)
}

// TestAuthTokenExpiry: tokens expire while the clients run, and clientv3
// logs in again; etcdbalance's calls and its view must survive that as
// the stock client's do.
//
//   - simple tokens with a 2 s TTL (--auth-token-ttl). A simple token
//     lives while it is used, so the run has an idle phase longer than
//     the TTL after which every client must work again;
//   - JWT tokens with a 4 s TTL, which expire whatever the use: the run
//     goes on until the members have seen the clients log in again.
//
// Every call of the etcdbalance client must succeed, and its view must
// keep completing rounds with a leader.
func TestAuthTokenExpiry(t *testing.T) {
	t.Run("simple", func(t *testing.T) {
		hooks := newServerHooks()
		c, cfg := authCluster(t, hooks.config(etcdcluster.Config{Size: 3, Tweak: func(ec *embed.Config) {
			ec.AuthToken = "simple"
			ec.AuthTokenTTL = 2
		}}))
		tokenExpiryRun(t, c, cfg, hooks, true)
	})
	t.Run("jwt", func(t *testing.T) {
		pub, priv := writeJWTKeys(t)
		hooks := newServerHooks()
		c, cfg := authCluster(t, hooks.config(etcdcluster.Config{Size: 3, Tweak: func(ec *embed.Config) {
			ec.AuthToken = fmt.Sprintf("jwt,pub-key=%s,priv-key=%s,sign-method=ES256,ttl=4s", pub, priv)
		}}))
		tokenExpiryRun(t, c, cfg, hooks, false)
	})
}

func tokenExpiryRun(t *testing.T, c *etcdcluster.Cluster, cfg clientv3.Config, hooks *serverHooks, idle bool) {
	ms := c.Members()
	stock := newClientCfg(t, cfg)
	cli, err := etcdbalance.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	waitViewComplete(t, cli, c.Endpoints())
	logins0 := total(hooks.count(ms, rpcAuthenticate))

	var okStock, okBal result
	ops := func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, x := range []struct {
			cli *clientv3.Client
			r   *result
		}{{stock, &okStock}, {cli, &okBal}} {
			_, err := x.cli.Put(ctx, fmt.Sprintf("ttl/%d", i), "v")
			x.r.add(err)
			_, err = x.cli.Get(ctx, "ttl/", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithCountOnly())
			x.r.add(err)
			_, err = x.cli.Get(ctx, "ttl/0")
			x.r.add(err)
		}
	}
	// Busy: calls all the time, for at least 6 probe rounds (≥ 4.8 s,
	// more than twice the TTL).
	r0 := viewOf(t, cli).Rounds
	i := 0
	for viewOf(t, cli).Rounds < r0+6 || i < 20 {
		ops(i)
		i++
		if i > 100000 {
			t.Fatal("the view stopped completing rounds")
		}
	}
	if idle {
		// Idle: no calls for at least 4 probe rounds (≥ 3.2 s, more
		// than the TTL), so that unused tokens expire.
		waitRounds(t, cli, viewOf(t, cli).Rounds+4)
		for range 20 {
			ops(i)
			i++
		}
	} else {
		// JWTs expire however much they are used: go on until both
		// clients have logged in again at least twice.
		deadline := time.Now().Add(60 * time.Second)
		for total(hooks.count(ms, rpcAuthenticate)) < logins0+4 {
			if time.Now().After(deadline) {
				t.Fatalf("no token expired: %d logins after the start", total(hooks.count(ms, rpcAuthenticate))-logins0)
			}
			ops(i)
			i++
		}
	}
	logins := total(hooks.count(ms, rpcAuthenticate)) - logins0
	t.Logf("stock: %v", &okStock)
	t.Logf("etcdbalance: %v", &okBal)
	t.Logf("%d logins (Authenticate) after the start", logins)
	// Stock succeeds, etcdbalance must too. On a machine loaded enough for
	// calls to run out their 10 s (the race detector makes every JWT
	// signature slow), both fail some: etcdbalance may not fail more than
	// stock, give or take 5% of the calls.
	assert.LessOrEqual(t, okBal.fail.Load(), okStock.fail.Load()+okBal.total()/20, "etcdbalance: %v; stock: %v", &okBal, &okStock)
	assert.Positive(t, logins, "no client logged in again: the tokens never expired, the test proves nothing")
	// The view goes on: once the calls stop, a round finds the leader with
	// every probe answered. On a loaded machine a re-login (a JWT
	// signature under the race detector) can outlast a probe's deadline
	// for a round or two, as it outlasted some of the stock client's
	// calls above; a view that cannot log in again never gets there.
	var v etcdbalance.View
	waitFor(t, 60*time.Second, "a probe round with the leader and every member answering", func() bool {
		v = viewOf(t, cli)
		if v.Leader == "" {
			return false
		}
		for _, m := range v.Members {
			if m.LastError != "" {
				return false
			}
		}
		return true
	})
	t.Logf("view after the run: leader %s, round %d", v.Leader, v.Rounds)
}

// writeJWTKeys writes a fresh ECDSA P-256 key pair for etcd's JWT tokens.
func writeJWTKeys(t *testing.T) (pub, priv string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	dir := t.TempDir()
	priv, pub = filepath.Join(dir, "jwt.key"), filepath.Join(dir, "jwt.pub")
	require.NoError(t, os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600))
	return pub, priv
}

// TestAuthTLSClientCert: members require client certificates and auth
// is enabled; a client certificate whose CommonName is "root" logs in as
// root without a password. New with cfg.TLS works like clientv3.New.
func TestAuthTLSClientCert(t *testing.T) {
	dir := t.TempDir()
	f, err := testcerts.WriteDir(dir, "auth test CA", "etcd member", etcdcluster.RootUser)
	require.NoError(t, err)
	tc := &etcdcluster.TLSConfig{
		CertFile: f.ServerCertFile, KeyFile: f.ServerKeyFile, TrustedCAFile: f.CAFile,
		ClientCertFile: f.ClientCertFile, ClientKeyFile: f.ClientKeyFile,
		ClientCertAuth: true,
	}
	c := startCluster(t, etcdcluster.Config{Size: 3, TLS: tc})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.EnableAuth(ctx, rootPassword))

	var eps []string
	for _, ep := range c.Endpoints() {
		eps = append(eps, "https://"+ep)
	}
	tlsCfg, err := tc.ClientTLS()
	require.NoError(t, err)
	cfg := clientConfig(eps)
	cfg.TLS = tlsCfg

	exercise(t, "stock", newClientCfg(t, cfg))
	cli, err := etcdbalance.New(cfg)
	require.NoError(t, err, "New with a client certificate for root")
	t.Cleanup(func() { _ = cli.Close() })
	exercise(t, "etcdbalance", cli)
	v := waitViewComplete(t, cli, c.Endpoints())
	for _, m := range v.Members {
		assert.False(t, strings.Contains(m.LastError, "user name"), "probe of %s: %s", m.Addr, m.LastError)
	}
}
