package main

import (
	"context"
	"net"
	"net/http"
	"time"

	"go.etcd.io/etcd/client/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	// Registers least_request_experimental with grpc; nothing else does.
	_ "google.golang.org/grpc/balancer/leastrequest"
	"google.golang.org/grpc/peer"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/picker"
	"github.com/etcdbalance/etcdbalance-go/v2compat/v2client"
)

// policy is one way of building a client.
type policy struct {
	name  string
	about string
	v2    bool
	// vintage, "stock" or "patched", runs the client in a process of the
	// legacy module's vintage command (see vintage.go).
	vintage string
	// only, when set, is the one scenario in which "-policies all"
	// includes this policy; it can still be named for any other.
	only string
	// newV3 builds a v3 client from cfg, which carries the endpoints and
	// the harness's own dial options (the attribution interceptor).
	newV3 func(cfg clientv3.Config) (*clientv3.Client, error)
	// ebOpts are the etcdbalance options of an etcdbalance row (newV3
	// reads them when it runs, so flags can add to them).
	ebOpts []etcdbalance.Option
	eb     bool // built by etcdbalance.New
	// pickerCfg is an etcdbalance row's engine configuration (flags set
	// fields of it); events, with -events, records the row's events.
	pickerCfg picker.Config
	events    *eventLog
	// newV2 builds a v2 client; closeFn releases what the client alone
	// does not (v2compat's leader poll).
	newV2 func(cfg client.Config) (c client.Client, closeFn func(), err error)
}

// pickFirstShuffled is grpc's pick_first with the address list shuffled
// once when the balancer gets it: every request then goes to the first
// member that connects, until it fails. That is what the stock v2 client
// does (shuffle once at start, then pin), so this row shows the v2
// behaviour with v3's transport.
const pickFirstShuffled = `{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}`

// leastRequest is grpc-go's power-of-two-choices over outstanding
// requests. It is built on endpointsharding, so it reads the Endpoints
// that clientv3's resolver sends.
const leastRequest = `{"loadBalancingConfig":[{"least_request_experimental":{"choiceCount":2}}]}`

// withServiceConfig returns a v3 constructor that overrides clientv3's
// round_robin. Both options are needed: clientv3's resolver puts
// round_robin into its state, which beats a default service config unless
// the resolver's config is disabled.
func withServiceConfig(js string) func(clientv3.Config) (*clientv3.Client, error) {
	return func(cfg clientv3.Config) (*clientv3.Client, error) {
		cfg.DialOptions = append(cfg.DialOptions,
			grpc.WithDisableServiceConfig(),
			grpc.WithDefaultServiceConfig(js))
		return clientv3.New(cfg)
	}
}

// allPolicies returns the policies in report order. Each call returns
// fresh values, so nothing is shared between runs.
func allPolicies() []*policy {
	return []*policy{
		{
			name:  "v3-pinned",
			about: "clientv3 on pick_first with shuffleAddressList: the v2 client's shuffle-once-then-pin",
			newV3: withServiceConfig(pickFirstShuffled),
		},
		{
			name:  "v3-roundrobin",
			about: "stock clientv3 (round_robin)",
			newV3: clientv3.New,
		},
		{
			name:  "v3-leastrequest",
			about: "clientv3 on grpc-go's least_request_experimental (choiceCount 2)",
			newV3: withServiceConfig(leastRequest),
		},
		ebPolicy("etcdbalance", "clientv3 from etcdbalance.New (default policy)", ""),
		ebPolicy("etcdbalance-hedged", "etcdbalance.New with WithHedgedReads(0.05): a serializable Get with no answer after its member's p95 is sent once more to another member, within 5% of reads",
			"gc-pauses", etcdbalance.WithHedgedReads(0.05)),
		ebPolicy("etcdbalance-noleader", "etcdbalance.New with WithLeaderWrites(false): writes spread by load like reads, as a follower forwards them",
			"job-storm", etcdbalance.WithLeaderWrites(false)),
		{
			name:    "v3-1.7-stock",
			about:   "clientv3 v3.1.5 on grpc v1.0.4, as Kubernetes 1.7 vendors it: pinned to the first member up; serializable reads",
			vintage: "stock",
		},
		{
			name:    "v3-1.7-patched",
			about:   "the same with examples/apiserver-v1.7/etcd3-clientv3.patch (legacy/v3balancer); serializable reads",
			vintage: "patched",
		},
		{
			name:  "v2-stock",
			about: "the etcd v2 client (go.etcd.io/etcd/client/v2): shuffled once, pinned",
			v2:    true,
			newV2: func(cfg client.Config) (client.Client, func(), error) {
				c, err := client.New(cfg)
				return c, func() {}, err
			},
		},
		{
			name:  "v2-etcdbalance",
			about: "the v2 client from v2compat/v2client.New",
			v2:    true,
			newV2: func(cfg client.Config) (client.Client, func(), error) {
				c, err := v2client.New(cfg)
				if err != nil {
					return nil, nil, err
				}
				return c, func() { _ = c.(*v2client.Client).Close() }, nil
			},
		},
	}
}

// ebPolicy is an etcdbalance row with opts (only: see policy.only).
func ebPolicy(name, about, only string, opts ...etcdbalance.Option) *policy {
	p := &policy{name: name, about: about, only: only, ebOpts: opts, eb: true}
	p.newV3 = func(cfg clientv3.Config) (*clientv3.Client, error) {
		// One WithPickerConfig: a second would replace the first whole.
		pc := p.pickerCfg
		if p.events != nil {
			pc.Events = p.events.client()
		}
		return etcdbalance.New(cfg, append([]etcdbalance.Option{etcdbalance.WithPickerConfig(pc)}, p.ebOpts...)...)
	}
	return p
}

func policyNames() []string {
	var names []string
	for _, p := range allPolicies() {
		names = append(names, p.name)
	}
	return names
}

func lookupPolicy(name string) *policy {
	for _, p := range allPolicies() {
		if p.name == name {
			return p
		}
	}
	return nil
}

// v3Config is the configuration every v3 policy starts from. The
// attribution interceptor is chained: grpc.WithUnaryInterceptor would
// replace clientv3's retry interceptor instead of adding to it.
func v3Config(endpoints []string, attr *attribution) clientv3.Config {
	return clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(attr.interceptor)},
	}
}

// probe carries the member that answered one request from the
// interceptor back to the worker that sent it.
type probe struct{ member int }

type probeKey struct{}

// attribution maps the peers of v3 calls to member indexes.
type attribution struct {
	index map[string]int // "ip:port" of each member endpoint -> index
}

// interceptor records, for requests sent by the load workers (those whose
// context carries a probe), the member that answered. clientv3's retry
// interceptor runs outside this one, so each attempt passes here and only
// the one that succeeded is recorded.
func (a *attribution) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	pr, _ := ctx.Value(probeKey{}).(*probe)
	if pr == nil {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var p peer.Peer
	all := make([]grpc.CallOption, 0, len(opts)+1)
	all = append(append(all, opts...), grpc.Peer(&p))
	err := invoker(ctx, method, req, reply, cc, all...)
	if err == nil && p.Addr != nil {
		if i, ok := a.index[p.Addr.String()]; ok {
			pr.member = i
		}
	}
	return err
}

// newAttribution resolves the endpoints (host:port) so that peers, which
// are IP addresses, can be matched to them.
func newAttribution(ctx context.Context, endpoints []string) *attribution {
	a := &attribution{index: map[string]int{}}
	for i, ep := range endpoints {
		a.index[ep] = i
		host, port, err := net.SplitHostPort(ep)
		if err != nil {
			continue
		}
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			continue
		}
		for _, ip := range ips {
			a.index[net.JoinHostPort(ip, port)] = i
		}
	}
	return a
}

// newHTTPTransport is the HTTP transport under both v2 policies. The v2
// client's default keeps 2 idle connections per host, which under
// concurrency would open and close a connection for most requests.
func newHTTPTransport(concurrency int) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: concurrency + 4,
		IdleConnTimeout:     30 * time.Second,
	}
}
