package etcdcluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/etcdbalance/etcdbalance-go/internal/testcerts"
)

// TLSConfig names the PEM files used to serve the members' client ports with
// TLS. Peer traffic stays plain: the fault proxies only carry client traffic.
type TLSConfig struct {
	// CertFile and KeyFile are the members' server certificate and key.
	CertFile, KeyFile string
	// TrustedCAFile is the CA that signed the server and client certificates.
	TrustedCAFile string
	// ClientCertFile and ClientKeyFile, if set, are presented by
	// ClientTLS; they are required when ClientCertAuth is on.
	ClientCertFile, ClientKeyFile string
	// ClientCertAuth makes the members require a client certificate signed
	// by TrustedCAFile.
	ClientCertAuth bool
}

// ClientTLS returns a client configuration that trusts TrustedCAFile and,
// when ClientCertFile is set, presents that certificate.
func (t *TLSConfig) ClientTLS() (*tls.Config, error) {
	pemCA, err := os.ReadFile(t.TrustedCAFile)
	if err != nil {
		return nil, fmt.Errorf("etcdcluster: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCA) {
		return nil, errors.New("etcdcluster: no certificate in " + t.TrustedCAFile)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if t.ClientCertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.ClientCertFile, t.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcdcluster: load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// GenerateTLS writes a fresh ECDSA P-256 CA, a server certificate for
// 127.0.0.1, ::1 and localhost, and a client certificate into dir (which
// must exist), valid for one day. The result has ClientCertAuth on.
func GenerateTLS(dir string) (*TLSConfig, error) {
	f, err := testcerts.WriteDir(dir, "etcdcluster test CA", "etcd member", "etcd client")
	if err != nil {
		return nil, fmt.Errorf("etcdcluster: %w", err)
	}
	return &TLSConfig{
		TrustedCAFile:  f.CAFile,
		CertFile:       f.ServerCertFile,
		KeyFile:        f.ServerKeyFile,
		ClientCertFile: f.ClientCertFile,
		ClientKeyFile:  f.ClientKeyFile,
		ClientCertAuth: true,
	}, nil
}
