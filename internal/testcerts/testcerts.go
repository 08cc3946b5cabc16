// Package testcerts generates short-lived ECDSA P-256 certificates for
// tests: a self-signed CA and leaf certificates it signs (servers with IP
// and DNS subject alternative names, clients), in memory or as PEM files.
//
// It uses the standard library only, so that unit tests can import it
// without pulling in an etcd server. The certificates are not meant for
// anything but tests: keys are fresh on every call and nothing is
// persisted beyond the files a caller asks for.
package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Validity is how long certificates stay valid after they are made.
// They are also backdated by an hour to tolerate clock skew.
const Validity = 24 * time.Hour

// CA is a self-signed certificate authority that issues leaf certificates.
// Its methods are safe for concurrent use.
type CA struct {
	// Cert is the parsed CA certificate.
	Cert *x509.Certificate
	// Key is the CA's private key.
	Key *ecdsa.PrivateKey

	mu     sync.Mutex
	serial int64 // last serial number handed out
}

// NewCA returns a fresh CA whose certificate has the given common name.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, serial: 1}, nil
}

// Pool returns a new certificate pool that trusts only the CA.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// WriteCert writes the CA certificate to path as PEM, mode 0600.
func (ca *CA) WriteCert(path string) error {
	return os.WriteFile(path, ca.CertPEM(), 0o600)
}

// Leaf describes a certificate for CA.Issue.
type Leaf struct {
	// CommonName is the subject's common name.
	CommonName string
	// Hosts become subject alternative names: entries that parse as IP
	// addresses are IP SANs, the others DNS names.
	Hosts []string
	// Server and Client set the extended key usages for TLS server and
	// client authentication; a certificate may have both.
	Server, Client bool
}

// Cert is an issued leaf certificate and its private key.
type Cert struct {
	// Cert is the parsed certificate.
	Cert *x509.Certificate
	// Key is the certificate's private key.
	Key *ecdsa.PrivateKey
}

// Issue makes a certificate for l, signed by the CA, with a fresh key and
// a serial number unique within the CA.
func (ca *CA) Issue(l Leaf) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: l.CommonName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	for _, h := range l.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Cert{Cert: cert, Key: key}, nil
}

// TLSCertificate returns c for use in tls.Config.Certificates.
func (c *Cert) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
}

// PEM returns the certificate and its key (PKCS #8) in PEM form.
func (c *Cert) PEM() (certPEM, keyPEM []byte, err error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// WriteFiles writes the certificate to certFile and its key (PKCS #8) to
// keyFile as PEM, both mode 0600.
func (c *Cert) WriteFiles(certFile, keyFile string) error {
	certPEM, keyPEM, err := c.PEM()
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyFile, keyPEM, 0o600)
}

// Files names the PEM files written by WriteDir.
type Files struct {
	// CAFile is the CA certificate.
	CAFile string
	// ServerCertFile and ServerKeyFile are a certificate for 127.0.0.1,
	// ::1 and localhost, usable for both server and client authentication.
	ServerCertFile, ServerKeyFile string
	// ClientCertFile and ClientKeyFile are a client certificate.
	ClientCertFile, ClientKeyFile string
}

// WriteDir makes a CA, a server and a client certificate and writes them
// into dir, which must exist, as ca.crt, server.crt, server.key,
// client.crt and client.key. serverName and clientName are the leaf
// certificates' common names.
//
// The server certificate also allows client authentication, for servers
// (such as etcd) that dial their own TLS ports.
func WriteDir(dir, caName, serverName, clientName string) (*Files, error) {
	ca, err := NewCA(caName)
	if err != nil {
		return nil, err
	}
	server, err := ca.Issue(Leaf{
		CommonName: serverName,
		Hosts:      []string{"127.0.0.1", "::1", "localhost"},
		Server:     true,
		Client:     true,
	})
	if err != nil {
		return nil, err
	}
	client, err := ca.Issue(Leaf{CommonName: clientName, Client: true})
	if err != nil {
		return nil, err
	}
	f := &Files{
		CAFile:         filepath.Join(dir, "ca.crt"),
		ServerCertFile: filepath.Join(dir, "server.crt"),
		ServerKeyFile:  filepath.Join(dir, "server.key"),
		ClientCertFile: filepath.Join(dir, "client.crt"),
		ClientKeyFile:  filepath.Join(dir, "client.key"),
	}
	if err := ca.WriteCert(f.CAFile); err != nil {
		return nil, err
	}
	if err := server.WriteFiles(f.ServerCertFile, f.ServerKeyFile); err != nil {
		return nil, err
	}
	if err := client.WriteFiles(f.ClientCertFile, f.ClientKeyFile); err != nil {
		return nil, err
	}
	return f, nil
}
