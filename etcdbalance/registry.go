package etcdbalance

import (
	"fmt"
	"sync"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
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
// Only one ClientConn may use an entry's engine: the first whose balancer
// attaches becomes its owner (identified by its channelz entry, which stays
// the same for the channel's whole life, across idle). Balancers of other
// channels built from the same options (clientv3's Maintenance.Status and
// friends dial a throwaway connection with the client's dial options) get
// an engine of their own, so they never overwrite the owner's endpoint set.
type registry struct {
	mu       sync.Mutex // guards the maps and the entries' fields marked so
	byID     map[string]*entry
	byClient map[*clientv3.Client]*entry // clients made by New
	byTarget map[string]*entry           // owner channel's canonical target
}

// entry is one registered engine.
type entry struct {
	// Set at creation, read-only after.
	id     string
	cfg    picker.Config
	engine *picker.Picker
	rt     *router // routing rules, cluster view and guard of this engine

	// Guarded by registry.mu.
	held     bool                // the client handle still exists
	attached bool                // a balancer of the owner channel is live
	owner    channelz.Identifier // the channel using the engine; nil until one attaches
	target   string              // owner's target, key in byTarget; "" until attached
	client   *clientv3.Client    // key in byClient, for New
}

var reg = &registry{
	byID:     map[string]*entry{},
	byClient: map[*clientv3.Client]*entry{},
	byTarget: map[string]*entry{},
}

// idSeq numbers registry keys; the prefix keeps them apart from keys a
// user might write into a hand-made config.
var idSeq atomic.Uint64

const idPrefix = "etcdbalance-client-"

// create registers a new engine for cfg with the routing rules set, held
// by a client handle.
func (r *registry) create(cfg picker.Config, set routing) (*entry, error) {
	eng, err := picker.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdbalance: invalid configuration: %v", err)
	}
	e := &entry{
		id:     fmt.Sprintf("%s%d", idPrefix, idSeq.Add(1)),
		cfg:    cfg,
		engine: eng,
		rt:     newRouter(set, eng),
		held:   true,
	}
	r.mu.Lock()
	r.byID[e.id] = e
	r.mu.Unlock()
	return e, nil
}

// bindClient records that cli was made by New with e.
func (r *registry) bindClient(cli *clientv3.Client, e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.client = cli
	r.byClient[cli] = e
}

// release drops the client handle's hold on e.
func (r *registry) release(e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.held = false
	r.maybeFreeLocked(e)
}

// attach returns the engine a balancer of channel ch (with canonical target
// target) is to use for cfg, and the entry it attached to, or nil when the
// engine is the balancer's own.
func (r *registry) attach(cfg *LBConfig, ch channelz.Identifier, target string) (*picker.Picker, *entry, error) {
	r.mu.Lock()
	e := r.byID[cfg.Client]
	if e != nil && !e.attached && (e.owner == nil || e.owner == ch) {
		e.attached = true
		if e.owner == nil {
			e.owner = ch
			if _, taken := r.byTarget[target]; !taken {
				e.target = target
				r.byTarget[target] = e
			}
		}
		r.mu.Unlock()
		return e.engine, e, nil
	}
	r.mu.Unlock()
	pc := cfg.Picker
	if e != nil {
		pc = e.cfg // same options, and the Clock and Rand JSON cannot carry
	}
	eng, err := picker.New(pc)
	if err != nil {
		return nil, nil, fmt.Errorf("etcdbalance: invalid configuration: %v", err)
	}
	return eng, nil, nil
}

// detach is called when the attached balancer closes.
func (r *registry) detach(e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.attached = false
	r.maybeFreeLocked(e)
}

func (r *registry) maybeFreeLocked(e *entry) {
	if e.held || e.attached {
		return
	}
	if r.byID[e.id] == e {
		delete(r.byID, e.id)
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
