package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	etcd2client "github.com/coreos/etcd/client"
	"golang.org/x/net/http2"

	"github.com/etcdbalance/etcdbalance-go/v2compat"
)

// newTransportForETCD2 builds the *http.Transport the way apiserver 1.7's
// etcd2 storage factory does: TLS from the given files (any may be empty),
// the settings of the etcd client's own DefaultTransport with many idle
// connections per host, and HTTP/2 switched on, as 1.7's
// utilnet.SetTransportDefaults does for every transport (it takes effect
// on https members).
func newTransportForETCD2(certFile, keyFile, caFile string) (*http.Transport, error) {
	cfg, err := clientTLS(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		//lint:ignore SA1019 apiserver 1.7 sets Dial; the example copies it as it was.
		Dial: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).Dial,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 500,
		TLSClientConfig:     cfg,
	}
	//lint:ignore SA1019 1.7 calls ConfigureTransport; newer code sets http.Transport.Protocols.
	if err := http2.ConfigureTransport(tr); err != nil {
		return nil, err
	}
	return tr, nil
}

// clientTLS does what etcd's transport.TLSInfo.ClientConfig does with the
// three files 1.7 passes it.
func clientTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if certFile != "" || keyFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", caFile)
		}
	}
	return cfg, nil
}

// newETCD2Client is apiserver 1.7's etcd2 client construction with the
// patch applied: every storage resource with the same server list and TLS
// files gets the same v2compat.Transport (one leader poll, in-flight counts
// per member, not per resource) wrapping the *http.Transport 1.7 builds,
// and the client gets that. release is the storage's DestroyFunc.
func newETCD2Client(serverList []string, certFile, keyFile, caFile string, opts ...v2compat.Option) (cli etcd2client.Client, tr *v2compat.Transport, release func(), err error) {
	tr, release, err = v2compat.Shared(serverList, []string{certFile, keyFile, caFile}, func() (v2compat.CancelableTransport, error) {
		return newTransportForETCD2(certFile, keyFile, caFile)
	}, opts...)
	if err != nil {
		return nil, nil, nil, err
	}
	cli, err = etcd2client.New(etcd2client.Config{
		Endpoints: serverList,
		Transport: tr,
	})
	if err != nil {
		release()
		return nil, nil, nil, err
	}
	return cli, tr, release, nil
}
