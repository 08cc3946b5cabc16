package etcdcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
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
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "etcdcluster test CA"},
		NotBefore:             now.Add(-time.Hour), // tolerate clock skew
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	t := &TLSConfig{
		TrustedCAFile:  filepath.Join(dir, "ca.crt"),
		CertFile:       filepath.Join(dir, "server.crt"),
		KeyFile:        filepath.Join(dir, "server.key"),
		ClientCertFile: filepath.Join(dir, "client.crt"),
		ClientKeyFile:  filepath.Join(dir, "client.key"),
		ClientCertAuth: true,
	}
	if err := writePEM(t.TrustedCAFile, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	server := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "etcd member"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
		// etcd also dials its own client port (e.g. the gRPC gateway), so the
		// server certificate serves as a client certificate too.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if err := issue(server, ca, caKey, now, t.CertFile, t.KeyFile); err != nil {
		return nil, err
	}
	client := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "etcd client"},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := issue(client, ca, caKey, now, t.ClientCertFile, t.ClientKeyFile); err != nil {
		return nil, err
	}
	return t, nil
}

func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return err
	}
	return writePEM(keyFile, "PRIVATE KEY", keyDER)
}

func writePEM(path, typ string, der []byte) error {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("etcdcluster: %w", err)
	}
	return nil
}
