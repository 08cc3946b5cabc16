package main

import (
	"net"
	"net/http"
	"time"

	etcd2client "github.com/coreos/etcd/client"

	"github.com/etcdbalance/etcdbalance-go/v2compat"
)

// newTransportForETCD2 builds the *http.Transport the way apiserver 1.7's
// etcd2 storage factory does (minus TLS files, which this example does not
// take): the settings of the etcd client's own DefaultTransport, with many
// idle connections per host.
func newTransportForETCD2() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		//lint:ignore SA1019 apiserver 1.7 sets Dial; the example copies it as it was.
		Dial: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).Dial,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 500,
	}
}

// newETCD2Client is apiserver 1.7's newETCD2Client with the patch applied:
// the *http.Transport is wrapped in a v2compat.Transport over the same
// server list, and that is what the client gets. The returned transport
// must be closed when the client is dropped (apiserver: in the storage's
// DestroyFunc).
func newETCD2Client(tr *http.Transport, serverList []string, opts ...v2compat.Option) (etcd2client.Client, *v2compat.Transport, error) {
	balanced, err := v2compat.New(tr, serverList, opts...)
	if err != nil {
		return nil, nil, err
	}
	cli, err := etcd2client.New(etcd2client.Config{
		Endpoints: serverList,
		Transport: balanced,
	})
	if err != nil {
		balanced.Close()
		return nil, nil, err
	}
	return cli, balanced, nil
}
