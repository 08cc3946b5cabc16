package v3balancer

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
	"golang.org/x/net/context"
	"google.golang.org/grpc"
)

// Tags the engine keeps on members.
const (
	tagLeader picker.Tags = 1 << iota
	tagLagging
	tagDown // no client of this engine has a connection up
)

const (
	probeInterval = time.Second
	probeTimeout  = time.Second
	// lagLimit is how far a member's raft index may trail the leader's before
	// serializable reads leave it out.
	lagLimit = 1000
)

// engine is the state shared by every Balancer of one endpoint set and TLS
// key: the picker, the up counts and the prober.
type engine struct {
	key    string
	p      *picker.Picker
	status StatusFunc

	mu    sync.Mutex
	refs  map[*Balancer]bool
	hosts []string
	up    map[string]int

	kick chan struct{} // a client's connection became known: probe now
	stop chan struct{}
	done chan struct{}
}

var engines = struct {
	sync.Mutex
	m map[string]*engine
}{m: make(map[string]*engine)}

// TLSKey identifies a client's TLS identity for engine sharing: the client
// certificates and the server name. clientv3 gets a *tls.Config, not the
// file names, and Kubernetes 1.7 builds a new one for every storage client,
// so pointers would never match. Root CAs are left out: two clients with
// the same certificate talk to the same members. It returns "" for nil.
func TLSKey(cfg *tls.Config) string {
	if cfg == nil {
		return ""
	}
	h := sha256.New()
	for _, c := range cfg.Certificates {
		for _, der := range c.Certificate {
			h.Write(der)
		}
		h.Write([]byte{0})
	}
	h.Write([]byte(cfg.ServerName))
	return hex.EncodeToString(h.Sum(nil))
}

func acquire(hosts []string, tlsKey string, status StatusFunc, b *Balancer) *engine {
	sorted := append([]string(nil), hosts...)
	sort.Strings(sorted)
	key := strings.Join(sorted, ",") + "|" + tlsKey
	engines.Lock()
	defer engines.Unlock()
	e := engines.m[key]
	if e == nil {
		p, err := picker.New(picker.Config{})
		if err != nil {
			panic(err) // the zero Config is valid
		}
		e = &engine{key: key, p: p, status: status, refs: make(map[*Balancer]bool), up: make(map[string]int),
			kick: make(chan struct{}, 1)}
		e.setHosts(sorted)
		if status != nil {
			e.stop, e.done = make(chan struct{}), make(chan struct{})
			go e.probeLoop()
		}
		engines.m[key] = e
	}
	e.mu.Lock()
	e.refs[b] = true
	e.mu.Unlock()
	return e
}

// setHosts installs the set and marks every member without a connection
// down. Called with e.mu held or before e is shared.
func (e *engine) setHosts(hosts []string) {
	if err := e.p.SetEndpoints(hosts); err != nil {
		return // an address with spaces: grpc could not dial it either
	}
	e.hosts = hosts
	for _, h := range hosts {
		if e.up[h] == 0 {
			e.p.UpdateTags(h, tagDown, 0)
		}
	}
}

// addUp counts a connection to a going up (d = 1) or down (d = -1).
// Members outside the set (after clientv3's SetEndpoints) join it.
func (e *engine) addUp(a string, d int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	known := false
	for _, h := range e.hosts {
		known = known || h == a
	}
	if !known {
		e.setHosts(append(append([]string(nil), e.hosts...), a))
	}
	e.up[a] += d
	switch {
	case e.up[a] <= 0:
		delete(e.up, a)
		e.p.UpdateTags(a, tagDown, 0)
	case d > 0 && e.up[a] == 1:
		e.p.UpdateTags(a, 0, tagDown)
	}
}

// release drops b's reference; the last one stops the prober and removes
// the engine from the cache.
func (e *engine) release(b *Balancer) {
	engines.Lock()
	e.mu.Lock()
	delete(e.refs, b)
	last := len(e.refs) == 0
	e.mu.Unlock()
	if last && engines.m[e.key] == e {
		delete(engines.m, e.key)
	}
	engines.Unlock()
	if last && e.stop != nil {
		close(e.stop)
		<-e.done
	}
}

func (e *engine) probeLoop() {
	defer close(e.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-e.stop
		cancel()
	}()
	for {
		e.probe(ctx)
		// ±20% jitter, so that engines of many processes drift apart.
		t := time.NewTimer(picker.Jitter(probeInterval, 0.2, nil))
		select {
		case <-e.stop:
			t.Stop()
			return
		case <-e.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// probe asks every member that some client has up for its status, over that
// client's connection, and retags the leader and the lagging members.
func (e *engine) probe(ctx context.Context) {
	type target struct {
		addr string
		cc   *grpc.ClientConn
	}
	e.mu.Lock()
	bals := make([]*Balancer, 0, len(e.refs))
	for b := range e.refs {
		bals = append(bals, b)
	}
	hosts := e.hosts
	e.mu.Unlock()
	var targets []target
	for _, h := range hosts {
		for _, b := range bals {
			b.mu.Lock()
			cc := b.conn
			ok := b.up[h] && cc != nil
			b.mu.Unlock()
			if ok {
				targets = append(targets, target{h, cc})
				break
			}
		}
	}
	ids := make(map[uint64]string)
	index := make(map[string]uint64)
	var leader, term, top uint64
	for _, t := range targets {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		st, err := e.status(withAddr(pctx, t.addr), t.cc)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			continue
		}
		ids[st.Member] = t.addr
		index[t.addr] = st.RaftIndex
		if st.Leader != 0 && st.RaftTerm >= term {
			leader, term = st.Leader, st.RaftTerm
		}
		if st.RaftIndex > top {
			top = st.RaftIndex
		}
	}
	if len(targets) == 0 {
		return
	}
	leaderAddr := ids[leader]
	for _, h := range hosts {
		var set, unset picker.Tags
		if h == leaderAddr {
			set |= tagLeader
		} else {
			unset |= tagLeader
		}
		if i, ok := index[h]; ok && top-i > lagLimit {
			set |= tagLagging
		} else if ok {
			unset |= tagLagging
		}
		e.p.UpdateTags(h, set, unset)
	}
}
