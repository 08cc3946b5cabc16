package testcerts

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
)

// handshake runs a TLS handshake over a loopback TCP connection and
// returns the client's and the server's errors.
func handshake(t *testing.T, client, server *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		srv := tls.Server(s, server)
		err = srv.Handshake()
		srv.Close()
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cl := tls.Client(c, client)
	clientErr = cl.Handshake()
	cl.Close()
	return clientErr, <-done
}

func mustCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *CA, l Leaf) tls.Certificate {
	t.Helper()
	c, err := ca.Issue(l)
	if err != nil {
		t.Fatal(err)
	}
	return c.TLSCertificate()
}

// A server and a client with certificates from the same CA complete a
// mutually authenticated handshake, by IP and by DNS name; a client that
// trusts another CA, or a server that does, fails.
func TestHandshake(t *testing.T) {
	ca := mustCA(t, "test CA")
	server := mustIssue(t, ca, Leaf{CommonName: "server", Hosts: []string{"127.0.0.1", "example.test"}, Server: true})
	client := mustIssue(t, ca, Leaf{CommonName: "client", Client: true})
	serverCfg := &tls.Config{
		Certificates: []tls.Certificate{server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	}
	for _, name := range []string{"127.0.0.1", "example.test"} {
		cerr, serr := handshake(t, &tls.Config{
			RootCAs:      ca.Pool(),
			ServerName:   name,
			Certificates: []tls.Certificate{client},
		}, serverCfg)
		if cerr != nil || serr != nil {
			t.Fatalf("%s: client: %v, server: %v", name, cerr, serr)
		}
	}

	// A name the certificate does not carry.
	cerr, _ := handshake(t, &tls.Config{RootCAs: ca.Pool(), ServerName: "other.test", Certificates: []tls.Certificate{client}}, serverCfg)
	if cerr == nil || !strings.Contains(cerr.Error(), "certificate") {
		t.Fatalf("a server certificate for another name was accepted: %v", cerr)
	}

	other := mustCA(t, "other CA")
	// The client does not trust the server's CA.
	cerr, _ = handshake(t, &tls.Config{RootCAs: other.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{client}}, serverCfg)
	var unknown x509.UnknownAuthorityError
	if !errors.As(cerr, &unknown) {
		t.Fatalf("client trusting another CA: got %v, want an unknown authority error", cerr)
	}
	// The client presents a certificate from another CA.
	stranger := mustIssue(t, other, Leaf{CommonName: "stranger", Client: true})
	// (Go clients skip certificates from CAs the server does not list,
	// so the certificate is forced.)
	_, serr := handshake(t, &tls.Config{
		RootCAs:    ca.Pool(),
		ServerName: "127.0.0.1",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &stranger, nil
		},
	}, serverCfg)
	if !errors.As(serr, &unknown) {
		t.Fatalf("server given a client certificate from another CA: got %v, want an unknown authority error", serr)
	}
}

// WriteDir's files load back into a working configuration.
func TestWriteDir(t *testing.T) {
	f, err := WriteDir(t.TempDir(), "test CA", "server", "client")
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(f.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no certificate in", f.CAFile)
	}
	server, err := tls.LoadX509KeyPair(f.ServerCertFile, f.ServerKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	client, err := tls.LoadX509KeyPair(f.ClientCertFile, f.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := &tls.Config{Certificates: []tls.Certificate{server}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		cerr, serr := handshake(t, &tls.Config{RootCAs: pool, ServerName: name, Certificates: []tls.Certificate{client}}, serverCfg)
		if cerr != nil || serr != nil {
			t.Fatalf("%s: client: %v, server: %v", name, cerr, serr)
		}
	}
	for _, file := range []string{f.CAFile, f.ServerKeyFile, f.ClientKeyFile} {
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", file, fi.Mode().Perm())
		}
	}
}
