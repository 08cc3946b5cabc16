package etcdbalance

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/channelz"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Name is the name the balancer is registered under with grpc. New and
// DialOptions write it into the service config they set; code that writes
// its own service config names it in loadBalancingConfig
// ({"etcdbalance": {}}), and gets an engine with picker's defaults and no
// cluster view.
const Name = "etcdbalance"

var logger = grpclog.Component(Name)

func init() {
	recordPool.New = newCallRecord
	balancer.Register(builder{})
}

type builder struct{}

func (builder) Name() string { return Name }

func (builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg, err := parseConfig(js)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &etcdBalancer{
		ClientConn: cc,
		channel:    opts.ChannelzParent,
		target:     opts.Target.String(),
	}
	b.child = endpointsharding.NewBalancer(b, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return b
}

// etcdBalancer keeps one pickfirst child per member (through
// endpointsharding) and publishes a grpcPicker over the READY ones, which
// asks the engine for every decision.
//
// grpc calls UpdateClientConnState, ResolverError, ExitIdle and Close one
// at a time. UpdateState is called by endpointsharding, synchronously from
// within those calls or from a child's state change, never two at a time
// (endpointsharding holds its own lock around it), but possibly alongside
// one of grpc's calls: mu orders the two.
type etcdBalancer struct {
	// Set by Build, read-only after.

	// ClientConn is the channel. It is embedded so that endpointsharding
	// and the children can use it as theirs; UpdateState is overridden.
	balancer.ClientConn
	child   balancer.Balancer   // endpointsharding over pickfirst children
	channel channelz.Identifier // identifies the channel across idle rebuilds
	target  string              // the channel's canonical target

	// mu guards the fields below. Never hold mu while calling into child:
	// the child calls back into UpdateState, which takes mu.
	mu sync.Mutex
	// engine is set by the first UpdateClientConnState; it changes only when
	// the registry moves the client's engine to or from this channel
	// (switchEngine).
	engine *picker.Picker
	// entry is the registry entry engine belongs to; nil when the engine is
	// this balancer's own.
	entry *entry
	// rt is the entry's routing state; nil for an engine of its own, which
	// has no cluster view and routes by load alone.
	rt *router
	// unlisten ends the balancer's listening to rt's changes.
	unlisten func()
	// addrs are the members of the last resolver update, one per endpoint.
	addrs []string
	// ready are the READY children of the last child update, by address.
	ready  map[string]balancer.Picker
	closed bool
}

func (b *etcdBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	cfg, ok := s.BalancerConfig.(*lbConfig)
	if !ok {
		if s.BalancerConfig != nil {
			logger.Errorf("etcdbalance: config of unexpected type %T", s.BalancerConfig)
			return balancer.ErrBadResolverState
		}
		cfg = &lbConfig{}
	}
	addrs := endpointKeys(s.ResolverState.Endpoints)

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	if b.engine == nil {
		eng, e, err := reg.attach(cfg.Client, b)
		if err != nil {
			b.mu.Unlock()
			logger.Errorf("%v", err)
			return balancer.ErrBadResolverState
		}
		b.useLocked(eng, e)
	}
	if err := b.setEndpointsLocked(addrs); err != nil {
		b.mu.Unlock()
		logger.Errorf("etcdbalance: %v", err)
		return balancer.ErrBadResolverState
	}
	b.mu.Unlock()

	return b.child.UpdateClientConnState(balancer.ClientConnState{
		// No BalancerConfig: it is ours, not pickfirst's. The health listener
		// lets pickfirst children follow client-side health checks.
		ResolverState: pickfirst.EnableHealthListener(s.ResolverState),
	})
}

// useLocked makes eng (of entry e, nil for an engine of the balancer's
// own) the engine that this balancer's pickers ask.
func (b *etcdBalancer) useLocked(eng *picker.Picker, e *entry) {
	if b.unlisten != nil {
		b.unlisten()
	}
	b.engine, b.entry, b.rt, b.unlisten = eng, e, nil, nil
	if e != nil {
		b.rt = e.rt
		b.unlisten = b.rt.listen(b.republish)
	}
}

// setEndpointsLocked hands the engine the members of the last resolver
// update, and tags them from the children's states.
func (b *etcdBalancer) setEndpointsLocked(addrs []string) error {
	known := b.engine.Endpoints()
	if err := b.engine.SetEndpoints(addrs); err != nil {
		return err
	}
	if b.rt != nil && b.rt.viewOn.Load() {
		// A member new to the engine may be a learner: keep it out of what
		// learners refuse until a probe says what it is.
		for _, a := range addrs {
			if !slices.Contains(known, a) {
				_ = b.engine.UpdateTags(a, tagUnverified, 0)
			}
		}
	}
	b.addrs = addrs
	// New members stay out of the engine's choice until their child says
	// READY.
	b.setTagsLocked()
	return nil
}

// switchEngine moves the balancer to eng (of entry e, or its own when e is
// nil): the registry has confirmed that this channel is the client's own
// (adopt), or given the entry to that channel (disown). Calls in flight
// finish on the engine that picked them.
func (b *etcdBalancer) switchEngine(eng *picker.Picker, e *entry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.engine == eng {
		return
	}
	b.useLocked(eng, e)
	if err := b.setEndpointsLocked(b.addrs); err != nil {
		logger.Errorf("etcdbalance: %v", err)
	}
	if len(b.ready) > 0 {
		b.publishLocked()
	}
}

// answerClaim serves the registry's claims (see registry.claim): a call
// whose context carries one is never sent; it tells the registry which
// balancer serves the channel it was made on.
func (b *etcdBalancer) answerClaim(ctx context.Context) error {
	if claims.Load() == 0 || ctx == nil {
		return nil
	}
	c, _ := ctx.Value(claimKey{}).(*claim)
	if c == nil {
		return nil
	}
	reg.confirm(c, b)
	return status.Error(codes.Aborted, "etcdbalance: claim answered")
}

// UpdateState receives endpointsharding's aggregate state. While any member
// is READY, it publishes a grpcPicker over the READY members; otherwise it
// passes endpointsharding's state through, so that grpc sees CONNECTING or
// TRANSIENT_FAILURE and calls wait, or fail with the children's errors
// (noReadyPicker).
func (b *etcdBalancer) UpdateState(s balancer.State) {
	ready := map[string]balancer.Picker{}
	for _, c := range endpointsharding.ChildStatesFromPicker(s.Picker) {
		if c.State.ConnectivityState != connectivity.Ready {
			continue
		}
		if k, ok := endpointKey(c.Endpoint); ok {
			ready[k] = c.State.Picker
		}
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.ready = ready
	if b.engine == nil || len(ready) == 0 {
		if b.engine != nil {
			b.setTagsLocked()
		}
		b.ClientConn.UpdateState(balancer.State{ConnectivityState: s.ConnectivityState, Picker: noReadyPicker{Picker: s.Picker, bal: b}})
		return
	}
	b.setTagsLocked()
	b.publishLocked()
}

// publishLocked hands grpc a new picker over the READY members. Publishing
// under mu keeps pickers in the order of the states they reflect; the
// channel does not call back into the balancer.
func (b *etcdBalancer) publishLocked() {
	b.ClientConn.UpdateState(balancer.State{
		ConnectivityState: connectivity.Ready,
		Picker:            &grpcPicker{bal: b, engine: b.engine, rt: b.rt, ready: b.ready, addrs: b.addrs},
	})
}

// republish publishes the current picker again, so that calls waiting for
// a picker (those that waited for the cluster view) are picked again.
func (b *etcdBalancer) republish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.engine == nil || len(b.ready) == 0 {
		return
	}
	b.publishLocked()
}

// setTagsLocked marks every member that is not READY as down in the
// engine, and every READY one as up, leaving the view's tags alone.
func (b *etcdBalancer) setTagsLocked() {
	for _, a := range b.addrs {
		set, clear := picker.Tags(0), tagDown
		if _, ok := b.ready[a]; !ok {
			set, clear = tagDown, 0
		}
		// An address the engine does not have (a concurrent update) is not
		// worth a log line.
		_ = b.engine.UpdateTags(a, set, clear)
	}
}

func (b *etcdBalancer) ResolverError(err error) { b.child.ResolverError(err) }

func (b *etcdBalancer) ExitIdle() { b.child.ExitIdle() }

// UpdateSubConnState is never called: the children own their SubConns and
// register listeners.
func (b *etcdBalancer) UpdateSubConnState(sc balancer.SubConn, s balancer.SubConnState) {
	logger.Errorf("etcdbalance: UpdateSubConnState(%v, %+v) called unexpectedly", sc, s)
}

func (b *etcdBalancer) Close() {
	b.mu.Lock()
	b.closed = true
	e := b.entry
	if b.unlisten != nil {
		// Only this balancer's own registration: a newer balancer of the
		// same channel may have replaced it.
		b.unlisten()
	}
	b.mu.Unlock()
	b.child.Close()
	if e != nil {
		reg.detach(e, b)
	}
}

// endpointKey names a member by its endpoint's first address. clientv3
// gives every endpoint exactly one address.
func endpointKey(ep resolver.Endpoint) (string, bool) {
	if len(ep.Addresses) == 0 {
		return "", false
	}
	return ep.Addresses[0].Addr, true
}

func endpointKeys(eps []resolver.Endpoint) []string {
	keys := make([]string, 0, len(eps))
	for _, ep := range eps {
		if k, ok := endpointKey(ep); ok {
			keys = append(keys, k)
		}
	}
	return keys
}

// String helps grpc's logs.
func (b *etcdBalancer) String() string { return fmt.Sprintf("%s[%p]", Name, b) }
