// Package v2client is a drop-in replacement for New of the etcd v2 client
// (go.etcd.io/etcd/client/v2) that balances every request over the members
// instead of pinning one: it puts a v2compat.Transport under the client and
// keeps the transport's endpoint set in step with the client's.
//
//	c, err := v2client.New(client.Config{
//		Endpoints:               []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"},
//		HeaderTimeoutPerRequest: time.Second,
//	})
//	if err != nil { ... }
//	defer c.(*v2client.Client).Close()
//	kapi := client.NewKeysAPI(c)
//
// The client's Transport, if set, does the HTTP and TLS work underneath;
// otherwise client.DefaultTransport does. The client's
// HeaderTimeoutPerRequest is handed to the transport (v2compat.WithHeaderTimeout)
// so that a member that sends no headers in time is charged for it.
//
// Connections: client.DefaultTransport (like a zero http.Transport) keeps
// only 2 idle connections per member (http.DefaultMaxIdleConnsPerHost).
// With more requests than that in flight at a member, every answer beyond
// the second closes its connection and a later request dials a new one: in
// our tests, at 16 concurrent reads over 5 members, one read in five
// dialled and the median latency rose by a quarter. Give the client a
// Transport whose MaxIdleConnsPerHost covers the requests you expect in
// flight per member.
package v2client

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/client/v2"

	"github.com/etcdbalance/etcdbalance-go/v2compat"
)

// Option configures the transport; see package v2compat for the options.
type Option = v2compat.Option

// Client is the client.Client New returns: the v2 client itself, with Sync,
// AutoSync and SetEndpoints also updating the transport's endpoint set.
// Every other method, Do included, is the v2 client's own.
type Client struct {
	client.Client
	tr *v2compat.Transport
}

var _ client.Client = (*Client)(nil)

// New returns a v2 client built from cfg whose requests are balanced over
// cfg.Endpoints by a v2compat.Transport wrapping cfg.Transport (or
// client.DefaultTransport). opts configure that transport; they come after
// the header timeout taken from cfg.HeaderTimeoutPerRequest and so can
// override it. Bad endpoints or options are reported with the bad value.
// The transport polls for the leader in the background: call Close (on the
// *Client the result holds) when done.
func New(cfg client.Config, opts ...Option) (client.Client, error) {
	inner := cfg.Transport
	if inner == nil {
		inner = client.DefaultTransport
	}
	all := make([]Option, 0, len(opts)+1)
	if cfg.HeaderTimeoutPerRequest > 0 {
		all = append(all, v2compat.WithHeaderTimeout(cfg.HeaderTimeoutPerRequest))
	}
	all = append(all, opts...)
	tr, err := v2compat.New(inner, cfg.Endpoints, all...)
	if err != nil {
		return nil, err
	}
	cfg.Transport = tr
	c, err := client.New(cfg)
	if err != nil {
		tr.Close()
		return nil, err
	}
	return &Client{Client: c, tr: tr}, nil
}

// Transport returns the balancing transport, for its Stats, Leader and
// picker Snapshot.
func (c *Client) Transport() *v2compat.Transport { return c.tr }

// Close stops the transport's leader poll. The client stays usable.
func (c *Client) Close() error { return c.tr.Close() }

// Sync refreshes the member list as the v2 client does, then gives the
// transport the client's new endpoint set.
func (c *Client) Sync(ctx context.Context) error {
	if err := c.Client.Sync(ctx); err != nil {
		return err
	}
	if err := c.tr.SetEndpoints(c.Client.Endpoints()); err != nil {
		return fmt.Errorf("v2client: the synced endpoints cannot be balanced (requests to them pass through unbalanced): %v", err)
	}
	return nil
}

// AutoSync calls Sync every interval until ctx ends or a Sync fails, like
// the v2 client's AutoSync, but through this client's Sync so that the
// transport follows.
func (c *Client) AutoSync(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("v2client: AutoSync interval %v must be positive", interval)
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if err := c.Sync(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// SetEndpoints sets the endpoints of both the transport and the client.
// The transport checks them first, so a bad URL changes neither.
func (c *Client) SetEndpoints(eps []string) error {
	old := c.tr.Endpoints()
	if err := c.tr.SetEndpoints(eps); err != nil {
		return err
	}
	if err := c.Client.SetEndpoints(eps); err != nil {
		_ = c.tr.SetEndpoints(old)
		return err
	}
	return nil
}
