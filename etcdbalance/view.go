package etcdbalance

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// view is the cluster view of one engine: who leads, who is a learner, how
// far each member has applied. A goroutine probes every member with Status
// on the client's own connection, pinned to the member with WithMember,
// once per interval (± viewJitter), and turns the answers into the
// engine's tags. It holds no reference to the connection: the connection
// lives on the goroutine's stack, so that a DialOptions handle can still be
// collected once its connection is closed.
type view struct {
	rt       *router
	engine   *picker.Picker
	interval time.Duration
	timeout  time.Duration // per probe
	done     chan struct{} // closed when the goroutine has returned

	rounds atomic.Int64

	mu      sync.Mutex // guards what follows
	stopped bool       // the goroutine has returned; tag nothing more
	members map[string]*memberState
	// peers maps the remote address of the connection to a member, as its
	// probes saw it, to the member's address where the two differ (an
	// endpoint by host name): the guard learns which member answered a
	// read from grpc's peer, which holds the former.
	peers    map[string]string
	leader   string // address; "" when unknown
	leaderID uint64
	term     uint64
	updated  time.Time
}

// memberState is what the view knows of one member.
type memberState struct {
	verified bool // answered a probe at least once
	id       uint64
	learner  bool
	leaderID uint64 // the leader it reported
	term     uint64
	applied  uint64
	commit   uint64
	rev      int64
	lag      uint64
	lagging  bool
	// needRev > 0: the member answered a read below this revision (the
	// monotonic guard's floor); it is tagBehind (a picker.Mark) until a
	// probe shows it has reached it, or until behindUntil (engine time),
	// whichever comes first.
	needRev     int64
	behindUntil time.Duration
	// hold is how long the last tagBehind was to last; it doubles while
	// the member keeps answering below the floor, and starts again from
	// behindHold once a probe shows it has caught up with lastNeed.
	hold     time.Duration
	lastNeed int64
	probes   int64
	failures int64
	lastErr  string
}

// probeTimeoutFloor bounds how short a probe's deadline may be: a short
// interval must not make a busy member look dead, and on an auth-enabled
// cluster a probe that finds the token expired logs in again within its
// own deadline (clientv3's retry interceptor), which costs a bcrypt check
// on the member: with too short a deadline a loaded member would never
// let the view log in again.
const probeTimeoutFloor = 3 * time.Second

// startView starts the view of e on cli's own connection, running until
// ctx ends (the client's context for New; Attach's own for Attach). It
// returns the view, or nil if one runs already. The entry holds the view
// while it runs; the view knows only the router and the engine.
func (e *entry) startView(ctx context.Context, cli *clientv3.Client) *view {
	rt := e.rt
	v := &view{
		rt:       rt,
		engine:   e.engine,
		interval: rt.set.viewInterval,
		timeout:  max(rt.set.viewInterval, probeTimeoutFloor),
		done:     make(chan struct{}),
		members:  map[string]*memberState{},
		peers:    map[string]string{},
	}
	if !e.view.CompareAndSwap(nil, v) {
		return nil
	}
	// Nothing is known of the members' roles yet: calls a learner refuses
	// wait for the first answers (see pickRouted).
	rt.settled.Store(false)
	for _, a := range e.engine.Endpoints() {
		_ = e.engine.UpdateTags(a, tagUnverified, 0)
	}
	rt.viewOn.Store(true)
	conn := cli.ActiveConnection()
	go func() {
		v.run(ctx, conn)
		// A later Attach may start a new view.
		e.view.CompareAndSwap(v, nil)
		// Calls parked for the view route by load alone now.
		rt.kick()
		close(v.done)
	}()
	return v
}

func (v *view) run(ctx context.Context, conn *grpc.ClientConn) {
	defer v.stop()
	mc := pb.NewMaintenanceClient(conn)
	for {
		v.round(ctx, mc)
		if ctx.Err() != nil {
			return
		}
		t := time.NewTimer(v.jittered())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// stop ends the view: its tags come off the engine, so that a client
// whose view was stopped (Attach's stop func) routes by load alone again
// instead of by a frozen picture.
func (v *view) stop() {
	v.rt.viewOn.Store(false)
	v.mu.Lock()
	v.stopped = true
	for _, a := range v.engine.Endpoints() {
		_ = v.engine.UpdateTags(a, 0, viewTags)
		_ = v.engine.Mark(a, tagBehind, 0)
	}
	v.mu.Unlock()
}

func (v *view) jittered() time.Duration {
	return picker.Jitter(v.interval, viewJitter, nil)
}

// probeResult is one member's answer to one probe.
type probeResult struct {
	addr string
	peer string // peerAddr of the connection that answered
	resp *pb.StatusResponse
	err  error
}

// round probes every member the client knows, in parallel, and applies the
// answers. Members whose connection is down and whose role is known are
// skipped (a pinned call would only wait for the connection); members not
// verified yet are probed even while connecting, which is what happens at
// start.
func (v *view) round(ctx context.Context, mc pb.MaintenanceClient) {
	snap := v.engine.Snapshot()
	v.mu.Lock()
	var targets []string
	for _, s := range snap {
		m := v.members[s.Addr]
		if s.Tags&tagDown != 0 && m != nil && m.verified {
			continue
		}
		if m == nil {
			m = &memberState{}
			v.members[s.Addr] = m
		}
		m.probes++
		targets = append(targets, s.Addr)
	}
	v.mu.Unlock()

	results := make([]probeResult, len(targets))
	var wg sync.WaitGroup
	for i, addr := range targets {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(WithMember(context.WithValue(ctx, probeKey{}, true), addr), v.timeout)
			defer cancel()
			var p peer.Peer
			resp, err := mc.Status(pctx, &pb.StatusRequest{}, grpc.Peer(&p))
			results[i] = probeResult{addr: addr, peer: peerAddr(&p), resp: resp, err: err}
			if err == nil {
				// Its role is known now: calls waiting for a voter need not
				// wait for the slowest probe of the round.
				v.learnRole(addr, resp.IsLearner)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	v.apply(snap, results)
	v.rounds.Add(1)
	// Whatever the first round found, nobody waits for the view after it;
	// and any tag it changed may let a parked call go.
	v.rt.settled.Store(true)
	v.rt.kick()
}

// learnRole records, as soon as a probe answers, whether the member is a
// learner, and republishes the picker if that changes its tags.
func (v *view) learnRole(addr string, learner bool) {
	v.mu.Lock()
	m := v.members[addr]
	changed := m != nil && !v.stopped && (!m.verified || m.learner != learner)
	if changed {
		m.verified, m.learner = true, learner
		v.tagLocked(addr, m)
	}
	v.mu.Unlock()
	if changed {
		v.rt.kick()
	}
}

// apply turns one round's answers into the view and the engine's tags.
//
// The leader is the member that answered this round and reported itself
// as leader, at the highest term among such claims: a deposed leader that
// has not noticed yet claims an older term. A claim is dropped when
// another answer names a different leader at a newer term (the real
// leader did not answer us). Members' terms alone decide nothing: a member
// cut off from its peers may have raised its term (without pre-vote) and
// knows no leader. A leader the client cannot reach is no leader for
// routing. Lag is measured against the most advanced answer, not the
// leader's, so that it is defined with no leader too. A member that did
// not answer keeps what was known of it.
func (v *view) apply(snap []picker.EndpointStats, results []probeResult) {
	var maxApplied, maxTerm, leaderID, leaderTerm uint64
	for _, r := range results {
		if r.err != nil {
			continue
		}
		s := r.resp
		maxApplied = max(maxApplied, s.RaftAppliedIndex)
		maxTerm = max(maxTerm, s.RaftTerm)
		if id := s.GetHeader().GetMemberId(); s.Leader == id && id != 0 && !s.IsLearner && s.RaftTerm >= leaderTerm {
			leaderID, leaderTerm = id, s.RaftTerm
		}
	}
	for _, r := range results {
		if r.err == nil && r.resp.RaftTerm > leaderTerm && r.resp.Leader != 0 && r.resp.Leader != leaderID {
			leaderID = 0
		}
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopped {
		return
	}
	leader := ""
	for _, r := range results {
		m := v.members[r.addr]
		if r.err != nil {
			m.failures++
			m.lastErr = r.err.Error()
			continue
		}
		if r.peer != "" && r.peer != r.addr {
			v.peers[r.peer] = r.addr
		}
		s := r.resp
		m.verified, m.lastErr = true, ""
		m.id = s.GetHeader().GetMemberId()
		m.learner, m.leaderID, m.term = s.IsLearner, s.Leader, s.RaftTerm
		m.applied, m.commit, m.rev = s.RaftAppliedIndex, s.RaftIndex, s.GetHeader().GetRevision()
		m.lag = maxApplied - min(maxApplied, m.applied)
		m.lagging = v.rt.set.lagThreshold > 0 && m.lag > v.rt.set.lagThreshold
		if m.needRev > 0 && m.rev >= m.needRev {
			m.needRev = 0
			_ = v.engine.Mark(r.addr, tagBehind, 0)
		}
		if m.rev >= m.lastNeed {
			m.hold = 0
		}
		if leaderID != 0 && m.id == leaderID {
			leader = r.addr
		}
	}
	v.leader, v.leaderID, v.term, v.updated = leader, leaderID, maxTerm, time.Now()
	if leader == "" {
		v.leaderID = 0
	}

	// Forget members the client no longer has; tag the others.
	have := make(map[string]bool, len(snap))
	for _, s := range snap {
		have[s.Addr] = true
	}
	for a, m := range v.members {
		if !have[a] {
			delete(v.members, a)
			continue
		}
		v.tagLocked(a, m)
	}
	for p, a := range v.peers {
		if !have[a] {
			delete(v.peers, p)
		}
	}
}

// memberAt returns the member whose connection's remote address is peer
// (see peerAddr), or "" when the view does not know it.
func (v *view) memberAt(peer string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.members[peer]; ok {
		return peer
	}
	return v.peers[peer]
}

// peerAddr names the remote end of the connection that served a call (the
// grpc.Peer call option fills p) as memberAddr names members: a TCP
// address as "host:port", a unix socket as grpc's unix address. With an
// endpoint given by host name the two differ ("10.0.0.1:2379" for
// "etcd-0:2379"), which the view's peers map resolves.
func peerAddr(p *peer.Peer) string {
	if p.Addr == nil {
		return ""
	}
	if p.Addr.Network() == "unix" {
		return memberAddr("unix://" + p.Addr.String())
	}
	return p.Addr.String()
}

// tagLocked sets the engine's view tags of one member from m.
func (v *view) tagLocked(addr string, m *memberState) {
	var set picker.Tags
	if addr == v.leader {
		set |= tagLeader
	}
	if m.learner {
		set |= tagLearner
	}
	if m.lagging {
		set |= tagLagging
	}
	if !m.verified {
		set |= tagUnverified
	}
	_ = v.engine.UpdateTags(addr, set, viewTags&^set)
}

// behindHold is how long a member that answered a read below the floor
// is first kept out of guarded reads. A healthy follower trails the
// leader by a few milliseconds of applying, so it answers below the floor
// whenever the client has just seen a newer revision elsewhere; it must not
// lose its reads for a whole probe interval for that. A member that is
// still behind when the hold ends is held twice as long the next time, up
// to the probe interval, after which the probes keep it out until it has
// caught up.
const behindHold = 100 * time.Millisecond

// markBehind records that addr answered a read below floor: it gets no
// guarded serializable read until a probe shows it at floor or beyond, or
// its hold ends.
func (v *view) markBehind(addr string, floor int64) {
	if addr == "" {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.members[addr]
	if m == nil || v.stopped {
		return // not a member any more, or no view to clear the tag
	}
	if now := v.engine.Now(); m.needRev == 0 || now >= m.behindUntil {
		m.hold = min(max(2*m.hold, behindHold), max(v.interval, behindHold))
		m.behindUntil = now + m.hold
		_ = v.engine.Mark(addr, tagBehind, m.hold)
	}
	m.needRev = max(m.needRev, floor)
	m.lastNeed = max(m.lastNeed, floor)
}

// leaderKnown reports whether the last round found a leader.
func (v *view) leaderKnown() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.leader != ""
}
