package etcdbalance

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/channelz"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// The registry keeps engines where a rebuilt balancer finds them again.
//
// grpc closes a channel's balancer when the channel goes idle and builds a
// new one when it leaves idle, so statistics kept inside one balancer
// instance would be lost. New and DialOptions therefore create the engine
// up front, register it under a fresh key, and put that key in the
// balancer's JSON config ("client"). Every balancer built from that config
// looks the key up.
//
// An entry lives while something holds it:
//
//   - the client handle: for New, until the client is closed (its context
//     ends); for DialOptions, until the returned dial options are garbage
//     (every ClientConn built with them has been closed and collected);
//   - the balancer attached to it, if any.
//
// Only one channel may use an entry's engine: the client's own. clientv3
// also dials throwaway channels with the client's dial options and the
// same target (Maintenance.Status and friends, and 3.7's version check
// before the client's own channel has left idle), and nothing a balancer
// is given tells the two apart. So ownership is first provisional: the
// first channel whose balancer attaches owns the entry, and another takes
// it over once the owner's balancer has closed. It is confirmed by a
// claim (see claim) made on cli.ActiveConnection(), the client's own
// channel: New makes it before it returns, Attach, Stats and ClusterView
// when they first see the client. From then on, balancers of other
// channels get engines of their own.
type registry struct {
	mu       sync.Mutex // guards the maps and the entries' fields marked so
	byID     map[string]*entry
	rejected map[string]error            // keys of DialOptions with invalid options
	byClient map[*clientv3.Client]*entry // clients made by New
	byTarget map[string]*entry           // owner channel's canonical target
}

// entry is the engine of one client, with its routing state and its
// monotonic guard. New and DialOptions register one up front (the
// template, under its key); a DialOptions value used for more clients (an
// apiserver's main and events clients) gets one more entry per further
// client, made from the template's configuration when that client's
// channel is first seen. Clients are told apart by their channels'
// canonical target, which clientv3 makes unique per client (it holds the
// client's address) and shares with the client's throwaway channels.
type entry struct {
	// Set at creation, read-only after.
	id       string
	cfg      picker.Config
	engine   *picker.Picker
	sink     *logSink             // where engine's events go
	rt       *router              // routing rules of this engine
	view     atomic.Pointer[view] // the running cluster view; nil while none runs
	template *entry               // the entry registered under id; itself for the template
	guard    guard                // the client's monotonic-read state
	last     atomic.Pointer[targetEntry]

	// Guarded by registry.mu.
	held      bool                // the client handle still exists
	bal       *etcdBalancer       // the owner's live balancer; nil when none
	owner     channelz.Identifier // the channel using the engine; nil until one attaches
	confirmed bool                // owner was claimed as the client's own channel
	target    string              // the client's channels' target; "" until first seen
	client    *clientv3.Client    // key in byClient, for New
	siblings  map[string]*entry   // the template's: entries of further clients by target
}

// targetEntry caches the last client entry that forConn found.
type targetEntry struct {
	target string
	e      *entry
}

var reg = &registry{
	byID:     map[string]*entry{},
	rejected: map[string]error{},
	byClient: map[*clientv3.Client]*entry{},
	byTarget: map[string]*entry{},
}

// idSeq numbers registry keys; the prefix keeps them apart from keys a
// user might write into a hand-made config.
var idSeq atomic.Uint64

const idPrefix = "etcdbalance-client-"

// create registers a new engine for cfg with the routing rules set, held
// by a client handle. Building the engine is what validates cfg: the
// error names the bad field and value.
func (r *registry) create(cfg picker.Config, set routing) (*entry, error) {
	if err := checkHedge(set.hedge); err != nil {
		return nil, err
	}
	eng, sink, err := newEngine(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdbalance: invalid configuration: %v", err)
	}
	e := &entry{
		id:     fmt.Sprintf("%s%d", idPrefix, idSeq.Add(1)),
		cfg:    cfg,
		engine: eng,
		sink:   sink,
		rt:     newRouter(set, eng),
		held:   true,
	}
	e.template = e
	r.mu.Lock()
	r.byID[e.id] = e
	r.mu.Unlock()
	return e, nil
}

// reject mints a key for DialOptions whose options are invalid: parsing a
// service config with it returns err, so that dialling fails with it. The
// key holds no engine.
func (r *registry) reject(err error) string {
	id := fmt.Sprintf("%s%d", idPrefix, idSeq.Add(1))
	r.mu.Lock()
	r.rejected[id] = err
	r.mu.Unlock()
	return id
}

// rejection returns the error of a key minted by reject, nil for any
// other.
func (r *registry) rejection(id string) error {
	if id == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rejected[id]
}

// forgetRejection drops a key minted by reject, once its dial options are
// garbage.
func (r *registry) forgetRejection(id string) {
	r.mu.Lock()
	delete(r.rejected, id)
	r.mu.Unlock()
}

// bindClient records that cli was made by New with e.
func (r *registry) bindClient(cli *clientv3.Client, e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.client = cli
	r.byClient[cli] = e
}

// release drops the client handle's hold on template e and its siblings.
func (r *registry) release(e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.held = false
	for _, s := range e.siblings {
		s.held = false
		r.maybeFreeLocked(s)
	}
	r.maybeFreeLocked(e)
}

// forConn returns the entry of the client that channel cc belongs to,
// made from template e: e itself for its first client. cc is nil in unit
// tests, which have one client.
func (e *entry) forConn(cc *grpc.ClientConn) *entry {
	if cc == nil {
		return e
	}
	target := cc.CanonicalTarget()
	if l := e.last.Load(); l != nil && l.target == target {
		return l.e
	}
	reg.mu.Lock()
	ce := reg.forTargetLocked(e, target)
	reg.mu.Unlock()
	e.last.Store(&targetEntry{target: target, e: ce})
	return ce
}

// forTargetLocked returns the entry, made from template t, of the client
// whose channels have target.
func (r *registry) forTargetLocked(t *entry, target string) *entry {
	if t.target == target {
		return t
	}
	if t.target == "" {
		t.target = target
		if _, taken := r.byTarget[target]; !taken {
			r.byTarget[target] = t
		}
		return t
	}
	if s := t.siblings[target]; s != nil {
		return s
	}
	eng, sink, err := newEngine(t.cfg)
	if err != nil { // the template's configuration, validated when it was made
		return t
	}
	s := &entry{id: t.id, cfg: t.cfg, engine: eng, sink: sink, rt: newRouter(t.rt.set, eng), template: t, held: t.held, target: target}
	if t.siblings == nil {
		t.siblings = map[string]*entry{}
	}
	t.siblings[target] = s
	if _, taken := r.byTarget[target]; !taken {
		r.byTarget[target] = s
	}
	return s
}

// attach returns the engine balancer b is to use for the entry registered
// under client, and the entry it attached to, or nil when the engine is
// the balancer's own: a key that is not registered (a hand-written
// config), or an entry that another channel owns (one of clientv3's
// throwaway channels, which gets the entry's configuration).
func (r *registry) attach(client string, b *etcdBalancer) (*picker.Picker, *entry, error) {
	r.mu.Lock()
	var e *entry
	if t := r.byID[client]; t != nil {
		e = r.forTargetLocked(t, b.target)
	}
	if e != nil && (e.owner == b.channel || (e.bal == nil && !e.confirmed)) {
		r.ownLocked(e, b)
		r.mu.Unlock()
		return e.engine, e, nil
	}
	r.mu.Unlock()
	var pc picker.Config
	if e != nil {
		pc = e.cfg      // validated when e was made
		pc.Events = nil // not the client's engine: its events are not the client's
	}
	eng, err := picker.New(pc)
	if err != nil {
		return nil, nil, fmt.Errorf("etcdbalance: invalid configuration: %v", err)
	}
	return eng, nil, nil
}

// ownLocked makes b's channel the owner of e, and b its live balancer.
func (r *registry) ownLocked(e *entry, b *etcdBalancer) {
	e.bal, e.owner = b, b.channel
}

// detach is called when balancer b closes.
func (r *registry) detach(e *entry, b *etcdBalancer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.bal == b {
		e.bal = nil
	}
	r.maybeFreeLocked(e)
}

func (r *registry) maybeFreeLocked(e *entry) {
	if e.held || e.bal != nil {
		return
	}
	if r.byID[e.id] == e {
		delete(r.byID, e.id)
	}
	if t := e.template; t != e && t.siblings[e.target] == e {
		delete(t.siblings, e.target)
	}
	if e.client != nil && r.byClient[e.client] == e {
		delete(r.byClient, e.client)
	}
	if e.target != "" && r.byTarget[e.target] == e {
		delete(r.byTarget, e.target)
	}
}

// lookup finds the entry of a client made by New or with DialOptions.
func (r *registry) lookup(cli *clientv3.Client) *entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.byClient[cli]; e != nil {
		return e
	}
	if conn := cli.ActiveConnection(); conn != nil {
		return r.byTarget[conn.CanonicalTarget()]
	}
	return nil
}

// A claim is a call made on a client's own channel only to learn which
// balancer serves that channel: whichever of our pickers sees it confirms
// its balancer as the owner of the entry and fails the call, so it is
// never sent. grpc offers no other way to connect a *grpc.ClientConn with
// the balancer inside it.
type claim struct {
	e        *entry
	answered bool // set by the picker; read after the call returns
}

type claimKey struct{}

// claims counts claims in flight, so that picks look into their context
// only while one is.
var claims atomic.Int64

// claimWait bounds a claim: it needs no server, only a picker, which a
// channel publishes as soon as its balancer is built.
const claimWait = 10 * time.Second

// claim confirms conn (a client's own channel) as the owner of e, moving
// the engine to its balancer if another channel held it. It reports whether
// one of our balancers answered: false means conn does not use e's
// balancer.
func (r *registry) claim(conn *grpc.ClientConn, e *entry) bool {
	r.mu.Lock()
	done := e.confirmed
	r.mu.Unlock()
	if done {
		return true
	}
	c := &claim{e: e}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), claimKey{}, c), claimWait)
	defer cancel()
	claims.Add(1)
	defer claims.Add(-1)
	// A stream, because clientv3's unary retry interceptor logs every
	// failed attempt as a warning and its stream interceptor does not. The
	// method is one that changes nothing, should the call ever be sent.
	if s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, methodStatus); err == nil {
		_ = s.CloseSend()
	}
	return c.answered
}

// confirm is a claim's answer from balancer b.
func (r *registry) confirm(c *claim, b *etcdBalancer) {
	e := c.e
	r.mu.Lock()
	prev := e.bal
	r.ownLocked(e, b)
	e.confirmed = true
	r.mu.Unlock()
	c.answered = true
	if prev != nil && prev != b {
		pc := e.cfg
		pc.Events = nil // prev's channel is not the client's
		eng, err := picker.New(pc)
		if err == nil { // validated when e was made
			prev.switchEngine(eng, nil)
		}
	}
	b.switchEngine(e.engine, e)
}
