package etcdbalance

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// New is clientv3.New with every RPC of the client balanced by this
// package: it returns a plain *clientv3.Client. cfg.DialOptions are kept;
// the balancer's options are appended after them. Invalid options are
// reported before anything is dialled. The engine lives until the client is
// closed; Stats reads it. New also starts the cluster view (unless
// WithClusterView switches it off), which routes writes to the leader,
// reads to the followers and keeps learners and lagging members safe (see
// the package doc); ClusterView reads it. It stops when the client closes.
func New(cfg clientv3.Config, opts ...Option) (*clientv3.Client, error) {
	o := applyOptions(opts)
	e, err := reg.create(o.picker, o.routing)
	if err != nil {
		return nil, err
	}
	ours := dialOptions(e.id, &handle{id: e.id, e: e})
	cfg.DialOptions = append(slices.Clip(cfg.DialOptions), ours...)
	// clientv3.New authenticates, and may check the cluster's version, on
	// its connections before it returns: the view starts after it, so
	// nothing that New does waits for the view (which could not probe an
	// auth-enabled cluster before the token exists anyway).
	cli, err := clientv3.New(cfg)
	if err != nil {
		reg.release(e)
		return nil, err
	}
	reg.bindClient(cli, e)
	// Close cancels the client's context first thing; the balancer, closed
	// with the connection, holds the entry until it is gone.
	context.AfterFunc(cli.Ctx(), func() { reg.release(e) })
	// Make sure the client's own channel owns the engine, whichever channel
	// clientv3 dialled first; this also builds the balancer of a 3.7
	// client, whose channel starts idle.
	if !reg.claim(cli.ActiveConnection(), e) {
		logger.Warningf("etcdbalance: the client's channel did not answer the balancer's claim; Stats and the cluster view may miss it")
	}
	if o.routing.viewInterval > 0 {
		e.startView(cli.Ctx(), cli)
	}
	return cli, nil
}

// DialOptions returns the dial options that put a client on this package's
// balancer, for code that builds its own clientv3.Config:
//
//	cfg.DialOptions = append(cfg.DialOptions, etcdbalance.DialOptions()...)
//	cli, err := clientv3.New(cfg)
//
// The options override the round_robin policy that clientv3's resolver
// asks for (grpc.WithDisableServiceConfig with
// grpc.WithDefaultServiceConfig) and add a chained stream interceptor and a
// chained unary interceptor (the monotonic guard, and the marker that tells
// serializable reads apart); etcd's own interceptors are left in place.
//
// The cluster view does not start by itself here, since the options exist
// before the client: call Attach once the client is built. Until then, or
// without it, the client spreads every call by load alone over the
// connected members (as if WithClusterView(-1) were given), learners
// included, and the monotonic guard re-issues a stale read as a
// linearizable one.
//
// Each client built with the options gets an engine, a cluster view (once
// attached) and a monotonic guard of its own, so one value may serve
// several clients (an apiserver's main and events clients). A client's
// engine is owned by its own channel: Attach, Stats and ClusterView
// confirm which channel that is, should a throwaway channel that clientv3
// dials with the same options (for Maintenance.Status and friends) have
// come first; other channels get engines of their own. The engines are
// freed once the options and every ClientConn built with them are
// unreachable (closed and garbage-collected); New frees its engine when
// the client closes.
//
// If an option is invalid, dialling fails with an error that names it
// ("grpc: the provided default service config is invalid: etcdbalance: ...").
func DialOptions(opts ...Option) []grpc.DialOption {
	o := applyOptions(opts)
	e, err := reg.create(o.picker, o.routing)
	if err != nil {
		// The key names the error, so that dialling fails with it.
		h := &handle{id: reg.reject(err)}
		runtime.AddCleanup(h, reg.forgetRejection, h.id)
		return dialOptions(h.id, h)
	}
	h := &handle{id: e.id, e: e}
	// e must not refer back to h (nor to any ClientConn, which refers to
	// h through the interceptors), or h would never be collected: the
	// balancer drops its registration in e when it closes, and the view
	// keeps the connection on its goroutine's stack only.
	runtime.AddCleanup(h, reg.release, e)
	return dialOptions(e.id, h)
}

func dialOptions(id string, h *handle) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDisableServiceConfig(),
		grpc.WithDefaultServiceConfig(serviceConfig(id)),
		// Chained: grpc.WithStreamInterceptor and grpc.WithUnaryInterceptor
		// would replace etcd's (its retry interceptor among them).
		grpc.WithChainStreamInterceptor(h.streamInterceptor),
		grpc.WithChainUnaryInterceptor(h.unaryInterceptor),
	}
}

// handle is referenced by the dial options (through the interceptor), and
// so by every ClientConn built with them: when it becomes garbage, no
// channel can use its engine any more.
type handle struct {
	id string // also keeps handle off the tiny allocator, which would delay its cleanup
	e  *entry // nil when the options were invalid
}

// Errors returned by Stats.
var (
	ErrNotBalanced  = errors.New("etcdbalance: client was not made by etcdbalance.New or with etcdbalance.DialOptions (or has not dialled yet)")
	ErrClientClosed = errors.New("etcdbalance: client is closed")
)

// entryOf finds the registry entry of a balanced client.
func entryOf(cli *clientv3.Client) (*entry, error) {
	if cli == nil {
		return nil, ErrNotBalanced
	}
	if cli.Ctx().Err() != nil {
		return nil, ErrClientClosed
	}
	e := reg.lookup(cli)
	if e == nil {
		return nil, ErrNotBalanced
	}
	reg.claim(cli.ActiveConnection(), e)
	return e, nil
}

// attachWait bounds how long Attach waits for a client's balancer to come
// up: clientv3.New returns before the channel has resolved its endpoints.
const attachWait = 10 * time.Second

// awaitEntry finds the registry entry of cli, waiting for its channel to
// set up its balancer if need be (3.7 clients start idle). A channel that
// is READY without an entry does not use this package's balancer: it would
// have attached its engine before any connection was up.
func awaitEntry(cli *clientv3.Client) (*entry, error) {
	conn := cli.ActiveConnection()
	conn.Connect()
	deadline := time.Now().Add(attachWait)
	for {
		ready := conn.GetState() == connectivity.Ready
		if e := reg.lookup(cli); e != nil {
			return e, nil
		}
		switch {
		case cli.Ctx().Err() != nil:
			return nil, ErrClientClosed
		case ready || time.Now().After(deadline):
			return nil, ErrNotBalanced
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ErrViewOff is returned by Attach for a client whose options switched the
// cluster view off (WithClusterView with a negative interval).
var ErrViewOff = errors.New("etcdbalance: the cluster view is switched off for this client")

// Attach starts the cluster view of a client built by clientv3.New with
// DialOptions, which cannot start it by itself (the options exist before
// the client):
//
//	cfg.DialOptions = append(cfg.DialOptions, etcdbalance.DialOptions()...)
//	cli, err := clientv3.New(cfg)
//	...
//	stop, err := etcdbalance.Attach(cli)
//
// From then on the client routes as one made by New: writes to the
// leader, reads to followers, learners and lagging members kept safe.
// The view stops when the client is closed, or when stop is called (stop
// waits for the probe goroutine to return; calling it again does nothing).
// Clients made by New have a view already: for them, and for a second
// Attach, stop does nothing.
//
// Attach waits, up to 10 s, for the client's connection to set up its
// balancer. It returns ErrNotBalanced for a client that does not use
// DialOptions (once its connection is READY, or after those 10 s),
// ErrClientClosed for a closed one, and ErrViewOff if the options switched
// the view off.
func Attach(cli *clientv3.Client) (stop func(), err error) {
	if cli == nil {
		return nil, ErrNotBalanced
	}
	if cli.Ctx().Err() != nil {
		return nil, ErrClientClosed
	}
	e, err := awaitEntry(cli)
	if err != nil {
		return nil, err
	}
	reg.claim(cli.ActiveConnection(), e)
	if cli.Ctx().Err() != nil {
		return nil, ErrClientClosed
	}
	if e.rt.set.viewInterval <= 0 {
		return nil, ErrViewOff
	}
	ctx, cancel := context.WithCancel(cli.Ctx())
	v := e.startView(ctx, cli)
	if v == nil {
		cancel()
		return func() {}, nil
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-v.done
		})
	}, nil
}
