package v2cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Build (or find) the member binary once, outside every test's own
	// deadline: a cold build takes about a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	_, err := Binary(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// noErr stops the test on an error. The package tests use the standard
// library only, so that they need nothing beyond the root module's go.sum.
func noErr(t testing.TB, err error, what ...any) {
	t.Helper()
	if err != nil {
		t.Fatal(append(what, err)...)
	}
}

// check stops the test when cond is false.
func check(t testing.TB, cond bool, format string, args ...any) {
	t.Helper()
	if !cond {
		t.Fatalf(format, args...)
	}
}

// v2 is a minimal client of the v2 keys API over plain net/http.
type v2 struct {
	t  *testing.T
	hc *http.Client
}

func newV2(t *testing.T, tlsCfg *tls.Config) *v2 {
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &v2{t: t, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// v2Node is the part of a v2 keys response the tests look at.
type v2Node struct {
	Action string
	Node   struct {
		Key           string
		Value         string
		ModifiedIndex uint64
	}
	ErrorCode int
	index     uint64 // X-Etcd-Index
	status    int
}

func (c *v2) do(method, base, key string, form url.Values, query string) (v2Node, error) {
	u := base + "/v2/keys/" + key
	if query != "" {
		u += "?" + query
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return v2Node{}, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return v2Node{}, err
	}
	defer resp.Body.Close()
	var n v2Node
	if err := json.NewDecoder(resp.Body).Decode(&n); err != nil {
		return v2Node{}, fmt.Errorf("%s %s: status %d: %w", method, u, resp.StatusCode, err)
	}
	n.status = resp.StatusCode
	h := resp.Header.Get("X-Etcd-Index")
	if h == "" {
		return n, fmt.Errorf("%s %s: no X-Etcd-Index header", method, u)
	}
	if n.index, err = strconv.ParseUint(h, 10, 64); err != nil {
		return n, fmt.Errorf("%s %s: X-Etcd-Index %q: %w", method, u, h, err)
	}
	return n, nil
}

func (c *v2) put(base, key, value string) v2Node {
	c.t.Helper()
	n, err := c.do(http.MethodPut, base, key, url.Values{"value": {value}}, "")
	noErr(c.t, err)
	check(c.t, n.status == http.StatusOK || n.status == http.StatusCreated, "PUT %s %s: status %d", base, key, n.status)
	check(c.t, n.Node.Value == value, "PUT %s %s: value %q", base, key, n.Node.Value)
	return n
}

// get reads a key; quorum reads go through raft, others are answered from
// the member's own store.
func (c *v2) get(base, key string, quorum bool) v2Node {
	c.t.Helper()
	q := ""
	if quorum {
		q = "quorum=true"
	}
	n, err := c.do(http.MethodGet, base, key, nil, q)
	noErr(c.t, err)
	return n
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 20 ms until it holds or ctx ends; it asserts
// an outcome, never a duration.
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestKeysThroughEveryProxy(t *testing.T) {
	ctx := testCtx(t)
	c := StartTB(t, Config{})
	cl := newV2(t, nil)

	check(t, len(c.Members()) == 3, "%d members", len(c.Members()))
	eps := c.Endpoints()
	check(t, len(eps) == 3, "endpoints %v", eps)
	ids := map[uint64]bool{}
	for i, m := range c.Members() {
		check(t, eps[i] == "http://"+m.Proxy().Addr(), "endpoint %s, proxy %s", eps[i], m.Proxy().Addr())
		check(t, m.URL() == eps[i], "URL %s, endpoint %s", m.URL(), eps[i])
		check(t, m.URL() != m.DirectURL(), "proxy URL equals direct URL %s", m.URL())
		check(t, m.ID() != 0, "%s has no ID", m.Name())
		ids[m.ID()] = true
	}
	check(t, len(ids) == 3, "member IDs must differ: %v", ids)

	var last uint64
	for i, m := range c.Members() {
		n := cl.put(m.URL(), fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
		check(t, n.index > last, "X-Etcd-Index %d after %d: it must grow with every write", n.index, last)
		last = n.index
	}
	for _, m := range c.Members() {
		for i := range c.Members() {
			n := cl.get(m.URL(), fmt.Sprintf("k%d", i), true)
			check(t, n.status == http.StatusOK, "GET status %d", n.status)
			check(t, n.Node.Value == fmt.Sprintf("v%d", i), "k%d = %q", i, n.Node.Value)
			check(t, n.index >= last, "X-Etcd-Index %d went below %d", n.index, last)
		}
		st := m.Proxy().Stats()
		check(t, st.Streams > 0, "requests to %s must pass its proxy: %+v", m.Name(), st)
	}
	// After WaitSynced a local read on every member sees every write.
	noErr(t, c.WaitSynced(ctx))
	for _, m := range c.Members() {
		n := cl.get(m.DirectURL(), "k2", false)
		check(t, n.Node.Value == "v2", "%s: k2 = %q", m.Name(), n.Node.Value)
	}

	li, err := c.Leader(ctx)
	noErr(t, err)
	// The member's own word on the leader agrees with the status channel.
	resp, err := cl.hc.Get(c.Member(0).URL() + "/v2/members/leader")
	noErr(t, err)
	defer resp.Body.Close()
	var lm struct{ ID, Name string }
	noErr(t, json.NewDecoder(resp.Body).Decode(&lm))
	check(t, lm.Name == c.Member(li).Name() && lm.ID == strconv.FormatUint(c.Member(li).ID(), 16),
		"/v2/members/leader says %+v, status says %s %x", lm, c.Member(li).Name(), c.Member(li).ID())
}

func TestKillRestartKeepsData(t *testing.T) {
	ctx := testCtx(t)
	c := StartTB(t, Config{})
	cl := newV2(t, nil)

	li, err := c.Leader(ctx)
	noErr(t, err)
	old := c.Member(li)
	cl.put(old.URL(), "before", "crash")
	pid := old.PID()
	noErr(t, old.Kill())
	check(t, !old.Running(), "killed member still running")
	check(t, processGone(pid), "pid %d still there after Kill", pid)
	_, err = old.Status(ctx)
	check(t, errors.Is(err, errNotRunning), "Status of a killed member: %v", err)
	// The proxy stays up but has nothing behind it.
	_, err = cl.do(http.MethodGet, old.URL(), "before", nil, "")
	check(t, err != nil, "GET through the proxy of a killed member succeeded")

	// The survivors elect a new leader and take writes.
	nl, err := c.Leader(ctx)
	noErr(t, err)
	check(t, nl != li, "leader still m%d after it was killed", li)
	cl.put(c.Member(nl).URL(), "during", "outage")

	noErr(t, old.Restart(ctx))
	check(t, old.Running(), "restarted member not running")
	check(t, old.PID() != pid, "same pid after restart")
	check(t, old.Restart(ctx) != nil, "restarting a running member succeeded")
	// Its own store still has the write from before the crash, and it
	// catches up with the one made while it was down.
	check(t, cl.get(old.URL(), "before", false).Node.Value == "crash", "write before the crash lost")
	eventually(t, ctx, "restarted member catches up", func() bool {
		return cl.get(old.URL(), "during", false).Node.Value == "outage"
	})
	cl.put(old.URL(), "after", "restart")
}

func TestCutPeersLagsAndMendCatchesUp(t *testing.T) {
	ctx := testCtx(t)
	c := StartTB(t, Config{})
	cl := newV2(t, nil)

	li, err := c.Leader(ctx)
	noErr(t, err)
	leader := c.Member(li)
	lagger := c.Member((li + 1) % 3)
	cl.put(leader.URL(), "k", "0")
	noErr(t, c.WaitSynced(ctx))

	noErr(t, lagger.CutPeers())
	cut, err := lagger.Status(ctx)
	noErr(t, err)
	const writes = 20
	for i := 1; i <= writes; i++ {
		cl.put(leader.URL(), "k", strconv.Itoa(i))
	}
	ls, err := leader.Status(ctx)
	noErr(t, err)
	check(t, ls.AppliedIndex >= cut.AppliedIndex+writes, "leader applied %d, cut at %d", ls.AppliedIndex, cut.AppliedIndex)
	s, err := lagger.Status(ctx)
	noErr(t, err)
	check(t, s.AppliedIndex == cut.AppliedIndex, "a cut member must apply nothing: %d, cut at %d", s.AppliedIndex, cut.AppliedIndex)
	// It still answers clients, from its stale store.
	check(t, cl.get(lagger.URL(), "k", false).Node.Value == "0", "cut member's store moved on")
	// The cluster keeps its leader: pre-vote keeps the cut member from
	// deposing it.
	nl, err := c.Leader(ctx)
	noErr(t, err)
	check(t, nl == li, "leader moved from m%d to m%d", li, nl)

	noErr(t, lagger.MendPeers())
	eventually(t, ctx, "mended member catches up", func() bool {
		s, err := lagger.Status(ctx)
		noErr(t, err)
		return s.AppliedIndex >= ls.AppliedIndex
	})
	check(t, cl.get(lagger.URL(), "k", false).Node.Value == strconv.Itoa(writes), "mended member's store is stale")
}

func TestCloseLeavesNothing(t *testing.T) {
	c, err := Start(testCtx(t), Config{Size: 3})
	noErr(t, err)
	var pids []int
	var proxies []string
	for _, m := range c.Members() {
		pids = append(pids, m.PID())
		proxies = append(proxies, m.Proxy().Addr())
		_, err := os.Stat(m.DataDir())
		noErr(t, err)
	}
	noErr(t, c.Members()[1].Kill()) // a killed member must not upset Close
	noErr(t, c.Close())
	noErr(t, c.Close(), "second Close:")
	for _, pid := range pids {
		check(t, processGone(pid), "pid %d still there", pid)
	}
	_, err = os.Stat(c.dir)
	check(t, os.IsNotExist(err), "data dir %s left behind: %v", c.dir, err)
	for _, a := range proxies {
		conn, err := net.DialTimeout("tcp", a, time.Second)
		if err == nil {
			conn.Close()
		}
		check(t, err != nil, "proxy %s still listening", a)
	}
}

func TestSingleMemberTLS(t *testing.T) {
	ctx := testCtx(t)
	files, pool := writeCert(t)
	c := StartTB(t, Config{Size: 1, TLS: files})
	check(t, strings.HasPrefix(c.Endpoints()[0], "https://"), "endpoint %s", c.Endpoints()[0])
	li, err := c.Leader(ctx)
	noErr(t, err)
	check(t, li == 0, "leader %d", li)

	cl := newV2(t, &tls.Config{RootCAs: pool})
	n := cl.put(c.Endpoints()[0], "secure", "yes")
	check(t, n.index != 0, "X-Etcd-Index 0")
	check(t, cl.get(c.Member(0).DirectURL(), "secure", false).Node.Value == "yes", "TLS write lost")
}

func TestStartFailureLeavesNothing(t *testing.T) {
	_, err := Start(testCtx(t), Config{Size: 2, LogLevel: "bogus"})
	check(t, err != nil, "Start with a bad log level succeeded")
	// The error carries the member's own explanation.
	check(t, strings.Contains(err.Error(), "bogus"), "error lacks the member's log: %v", err)
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, ownerFile))
		check(t, string(b) != strconv.Itoa(os.Getpid()), "failed Start left %s behind", d)
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for name, cfg := range map[string]Config{
		"negative size":     {Size: -1},
		"size too large":    {Size: MaxSize + 1},
		"TLS without key":   {TLS: &TLSFiles{CertFile: missing}},
		"TLS missing files": {TLS: &TLSFiles{CertFile: missing, KeyFile: missing}},
	} {
		_, err := Start(context.Background(), cfg)
		check(t, err != nil, "%s: accepted", name)
	}
}

func TestBinaryIsCached(t *testing.T) {
	ctx := testCtx(t)
	a, err := Binary(ctx)
	noErr(t, err)
	b, err := Binary(ctx)
	noErr(t, err)
	check(t, a == b, "%s then %s", a, b)
	check(t, isExecutable(a), "%s not executable", a)
}

// writeCert writes a self-signed certificate for 127.0.0.1 and returns its
// files and a pool that trusts it.
func writeCert(t *testing.T) (*TLSFiles, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	noErr(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "v2cluster test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	noErr(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	noErr(t, err)
	dir := t.TempDir()
	files := &TLSFiles{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	noErr(t, os.WriteFile(files.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	noErr(t, os.WriteFile(files.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	cert, err := x509.ParseCertificate(der)
	noErr(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return files, pool
}
