package v2compat

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/etcdbalance/etcdbalance-go/internal/testcerts"
	"github.com/etcdbalance/etcdbalance-go/picker"
)

// serverCert returns a server certificate from ca valid for the DNS name
// only.
func serverCert(t *testing.T, ca *testcerts.CA, name string) tls.Certificate {
	t.Helper()
	c, err := ca.Issue(testcerts.Leaf{CommonName: name, Hosts: []string{name}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	return c.TLSCertificate()
}

// Each member's certificate is checked against the name of the member
// actually dialed: the request written for a.test and sent to b.test
// verifies b.test's certificate, and an endpoint whose server holds a
// certificate for another name fails verification.
func TestTLSPerEndpoint(t *testing.T) {
	ca, err := testcerts.NewCA("v2compat test CA")
	if err != nil {
		t.Fatal(err)
	}
	var hits [2]int64
	servers := make([]*httptest.Server, 2)
	for i, name := range []string{"a.test", "b.test"} {
		i := i
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			atomic.AddInt64(&hits[i], 1)
			w.Header().Set("X-Etcd-Index", "1")
			w.Write([]byte(`{}`))
		}))
		s.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert(t, ca, name)}}
		s.StartTLS()
		defer s.Close()
		servers[i] = s
	}
	// Names resolve to the test servers: a.test and b.test to their own,
	// c.test to a.test's server, whose certificate does not name it.
	addrs := map[string]string{
		"a.test:443": servers[0].Listener.Addr().String(),
		"b.test:443": servers[1].Listener.Addr().String(),
		"c.test:443": servers[0].Listener.Addr().String(),
	}
	inner := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool()},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addrs[addr])
		},
	}
	defer inner.CloseIdleConnections()

	tr, err := New(inner, []string{"https://a.test", "https://b.test"}, WithLeaderPollInterval(-1),
		WithPickerConfig(picker.Config{Policy: picker.RoundRobin}))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for i := 0; i < 20; i++ {
		if code, _ := get(t, tr, "https://a.test/v2/keys/x"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if hits[0] != 10 || hits[1] != 10 {
		t.Fatalf("hits %v, want 10 each", hits)
	}

	bad, err := New(inner, []string{"https://c.test"}, WithLeaderPollInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	req, _ := http.NewRequest("GET", "https://c.test/v2/keys/x", nil)
	_, err = bad.RoundTrip(req)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a member with a certificate for another name was accepted: %v", err)
	}
}
