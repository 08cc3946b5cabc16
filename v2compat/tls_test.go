package v2compat

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "v2compat test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a server certificate valid for the DNS name only.
func (ca *testCA) issue(t *testing.T, name string, serial int64) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Each member's certificate is checked against the name of the member
// actually dialed: the request written for a.test and sent to b.test
// verifies b.test's certificate, and an endpoint whose server holds a
// certificate for another name fails verification.
func TestTLSPerEndpoint(t *testing.T) {
	ca := newTestCA(t)
	var hits [2]int64
	servers := make([]*httptest.Server, 2)
	for i, name := range []string{"a.test", "b.test"} {
		i := i
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			atomic.AddInt64(&hits[i], 1)
			w.Header().Set("X-Etcd-Index", "1")
			w.Write([]byte(`{}`))
		}))
		s.TLS = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, name, int64(10+i))}}
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
		TLSClientConfig: &tls.Config{RootCAs: ca.pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addrs[addr])
		},
	}
	defer inner.CloseIdleConnections()

	tr, err := New(inner, []string{"https://a.test", "https://b.test"}, LeaderPollInterval(-1),
		PickerConfig(picker.Config{Policy: picker.RoundRobin}))
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

	bad, err := New(inner, []string{"https://c.test"}, LeaderPollInterval(-1))
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
