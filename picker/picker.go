package picker

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// Kind is what a request is, for the bookkeeping.
type Kind uint8

const (
	// Unary requests are counted in flight and give a latency sample.
	Unary Kind = iota
	// Stream requests (watches, keep-alives, long polls) live for minutes:
	// they are counted apart and give no latency sample.
	Stream
)

func (k Kind) String() string {
	switch k {
	case Unary:
		return "unary"
	case Stream:
		return "stream"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Class is what a unary request asks for. Each class keeps its own latency
// estimate per endpoint, so that one kind of request does not make an
// endpoint look slow for the others (see Config). Streams give no sample
// and ignore it.
type Class uint8

const (
	// ClassPoint is a small request: a read of one key, a status or lease
	// call. The default.
	ClassPoint Class = iota
	// ClassRange is a read of many keys (an etcd Range with a range_end, a
	// v2 directory listing): large answers, bound by bandwidth and by the
	// size of the range rather than by the member's speed. Under P2CEWMA a
	// range read goes to one of the cheapest of all eligible endpoints, not
	// of two, in turn among those near the cheapest, and its cost counts
	// only the range reads in flight (see cheapest). A point read that
	// waited behind a range read gives no latency sample (see Done).
	ClassRange
	// ClassWrite is a write: a consensus round through the leader.
	ClassWrite

	numClasses = 3
)

// Tags are caller-defined bits attached to endpoints (leader, learner,
// lagging…), which a Request can exclude, prefer or avoid. An endpoint's
// tags are the bits set with UpdateTags and those set by Mark that are
// not yet due.
type Tags uint32

// Request describes one pick. The zero value is a unary request that any
// endpoint may serve.
type Request struct {
	Kind Kind
	// Exclude: endpoints with any of these tags are never picked.
	Exclude Tags
	// Skip: endpoints whose address is listed are never picked, whatever
	// their tags: a re-issued request skips the members already tried.
	Skip []string
	// Avoid: endpoints with any of these tags are picked only when no
	// other endpoint is eligible. It applies before Prefer and Reserve, so
	// that a preferred endpoint that is also avoided loses to the others.
	Avoid Tags
	// Prefer: when an eligible endpoint has one of these tags, only such
	// endpoints are considered.
	Prefer Tags
	// Reserve: endpoints with these tags (the leader, for reads) are held
	// in reserve by role, by the rule on Config.ReserveRatio: they are
	// picked when no other endpoint is eligible, or (cost-based policies,
	// unary requests) when every other eligible endpoint is measurably
	// slower for this request's class.
	Reserve Tags
	// Class selects the latency estimate the request is judged by and
	// feeds. Unknown values count as ClassPoint.
	Class Class
}

// Result is how a request ended, from the endpoint's point of view.
type Result uint8

const (
	// OK: the endpoint answered. Application-level errors (a failed
	// compare, key not found) are OK: the endpoint did its job.
	OK Result = iota
	// Failed: the endpoint is to blame (refused, reset, unavailable). It is
	// charged a latency sample of at least Config.FailurePenalty and counts
	// toward ejection.
	Failed
	// DeadlineExceeded: the request ran out of time at this endpoint. It is
	// charged at least Outcome.Timeout and counts toward ejection.
	DeadlineExceeded
	// Canceled: the caller gave up for its own reasons. No sample, no blame.
	Canceled
)

// Outcome is handed back with a ticket.
type Outcome struct {
	Result Result
	// Timeout is the request's whole deadline, for DeadlineExceeded: the
	// charge is the larger of it and the time the request took.
	Timeout time.Duration
	// Latency, when positive, is the latency sample for an OK result in
	// place of the time since Pick: for transports that measure to the
	// response headers but keep the request in flight until its body is
	// read.
	Latency time.Duration
}

// Ticket records one pick. Hand it back to Done exactly once. It is a small
// value, so picking allocates nothing.
type Ticket struct {
	e     *endpoint
	start int64
	kind  Kind
	class Class
	probe bool
	// reserve: picked from Request.Reserve; its sample keeps the estimate
	// that gate reads (see endpoint.reserveRTT).
	reserve bool
	// behindRange: a point read issued while a range read of this Picker
	// was in flight on the endpoint (see Done).
	behindRange bool
}

// Addr is the endpoint picked; "" for the zero Ticket.
func (t Ticket) Addr() string {
	if t.e == nil {
		return ""
	}
	return t.e.addr
}

// Kind is the request kind the ticket was issued for.
func (t Ticket) Kind() Kind { return t.kind }

// Errors returned by Pick.
var (
	ErrNoEndpoints = errors.New("picker: no endpoints")
	ErrNoEligible  = errors.New("picker: no endpoint is eligible for this request")
)

// unknownEndpoint is the error for an address that is not in the set.
func unknownEndpoint(addr string) error {
	return fmt.Errorf("picker: unknown endpoint %q", addr)
}

// state is one immutable endpoint set, in its current shuffled order. It is
// swapped whole with compare-and-swap; only pin changes in place.
type state struct {
	eps []*endpoint
	pin int32 // atomic: index into eps for the pin policies
}

// medianRefresh bounds how stale the median of the estimates may be.
const medianRefresh = int64(100 * time.Millisecond)

// Picker chooses an endpoint for each request. All methods are safe for
// concurrent use. Pick and Done take no lock and allocate nothing; the
// endpoint set is swapped with compare-and-swap. A Picker starts no
// goroutines, so there is nothing to close.
type Picker struct {
	// Atomics; 64-bit first for alignment.
	rr            uint64 // round-robin counter
	nextReshuffle int64
	// when each class's medBits was computed; 0 = stale
	medAt   [numClasses]int64
	last    int64 // the latest time now has returned
	off     int64 // added to the clock's reading: 1 plus every jump made for a step back
	jumpAt  int64 // the time the last jump landed on; 0 = none
	markDue int64 // the earliest end of a Mark; 0 = none pending
	// float64 bits of each class's median estimate; 0 = none measured.
	medBits [numClasses]uint64
	st      unsafe.Pointer

	// Immutable after New.
	s      settings
	clock  Clock
	rand   Source
	epoch  time.Time
	events func(Event) // Config.Events; nil: none
}

// New returns a Picker with no endpoints. It reports the first bad field of
// cfg by name.
func New(cfg Config) (*Picker, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	p := &Picker{s: s, clock: cfg.Clock, rand: cfg.Rand, events: cfg.Events}
	if p.clock == nil {
		p.clock = systemClock{}
	}
	p.epoch = p.clock.Now()
	p.last, p.off = 1, 1
	if p.rand == nil {
		p.rand = NewSource(uint64(time.Now().UnixNano()))
	}
	p.rr = p.rand.Uint64()
	p.st = unsafe.Pointer(&state{})
	if s.reshuffle > 0 {
		p.nextReshuffle = p.now() + p.jittered()
	}
	return p, nil
}

// Now is the engine's time, in nanoseconds since an arbitrary origin:
// always positive and never decreasing, however the Clock steps (see
// Config.Clock). Adapters measure their own holds and latencies with it,
// so that a clock step affects them as it affects the engine.
func (p *Picker) Now() time.Duration { return time.Duration(p.now()) }

// stepTolerance is how far the clock may read behind the engine's time
// before it counts as a step back: less is taken as jitter between
// cores, and time stands still until the clock catches up.
const stepTolerance = int64(time.Millisecond)

// now reads the clock, made monotonic: the value 0, the "none" of every
// time field, is never returned, nor one below an earlier one. Under Go 1.8
// (no monotonic reading in time.Now) an NTP step back would otherwise give
// negative latencies and stretch every hold by the size of the step.
//
// last is loaded before the clock is read, so any value in it came from an
// earlier reading: a reading below it means the clock stepped back, never a
// race between goroutines. How much real time passed across a step is
// unknown, so the engine jumps forward by s.stepJump, at least the longest
// hold: holds may end early, never late, and samples that straddle the jump
// are dropped (see Done). A step forward needs no care beyond clamping
// samples: the engine just sees a long idle spell.
func (p *Picker) now() int64 {
	for {
		last := atomic.LoadInt64(&p.last)
		off := atomic.LoadInt64(&p.off)
		t := int64(p.clock.Now().Sub(p.epoch)) + off
		if t >= last {
			// A concurrent reader may have moved last beyond t.
			return raiseTo(&p.last, t)
		}
		if last-t < stepTolerance {
			return last
		}
		to := last + p.s.stepJump
		if atomic.CompareAndSwapInt64(&p.off, off, off+to-t) {
			atomic.StoreInt64(&p.jumpAt, to)
			return raiseTo(&p.last, to)
		}
		// Another reader handled the step: read again.
	}
}

func (p *Picker) load() *state { return (*state)(atomic.LoadPointer(&p.st)) }

func (p *Picker) jittered() int64 {
	return int64(Jitter(time.Duration(p.s.reshuffle), p.s.jitter, p.rand))
}

// SetEndpoints replaces the endpoint set. Endpoints that stay keep their
// statistics; new ones start unmeasured and in slow start. Duplicates are
// dropped. Addresses are opaque but must be non-empty and free of spaces.
func (p *Picker) SetEndpoints(addrs []string) error {
	var uniq []string
	seen := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		if a == "" || strings.TrimSpace(a) != a || strings.ContainsAny(a, " \t\r\n") {
			return fmt.Errorf("picker: bad endpoint address %q", a)
		}
		if !seen[a] {
			seen[a] = true
			uniq = append(uniq, a)
		}
	}
	if len(uniq) > MaxEndpoints {
		return fmt.Errorf("picker: %d endpoints, more than the limit of %d", len(uniq), MaxEndpoints)
	}
	now := p.now()
	for {
		old := p.load()
		have := make(map[string]*endpoint, len(old.eps))
		for _, e := range old.eps {
			have[e.addr] = e
		}
		eps := make([]*endpoint, len(uniq))
		for i, a := range uniq {
			if e, ok := have[a]; ok {
				eps[i] = e
				continue
			}
			e := &endpoint{addr: a}
			if len(old.eps) > 0 {
				e.slowSince = now
			}
			eps[i] = e
		}
		p.shuffle(eps)
		if atomic.CompareAndSwapPointer(&p.st, unsafe.Pointer(old), unsafe.Pointer(&state{eps: eps})) {
			for c := range p.medAt {
				atomic.StoreInt64(&p.medAt[c], 0)
			}
			p.emitSetChange(old.eps, eps)
			return nil
		}
	}
}

// Endpoints returns the current set in its current order.
func (p *Picker) Endpoints() []string {
	st := p.load()
	out := make([]string, len(st.eps))
	for i, e := range st.eps {
		out[i] = e.addr
	}
	return out
}

// UpdateTags sets and clears tag bits of one endpoint atomically, leaving
// the other bits alone, so that independent owners of bits can share them.
func (p *Picker) UpdateTags(addr string, set, clear Tags) error {
	e := p.find(p.load(), addr)
	if e == nil {
		return unknownEndpoint(addr)
	}
	updateBits(&e.tags, uint32(set), uint32(clear))
	return nil
}

// Mark sets the tags t on the endpoint addr for d of engine time (see
// Now), on top of those set with UpdateTags, which neither sees nor
// clears them. A mark counts wherever tags do (Request, Eligible,
// Snapshot) and comes off by itself once due: the pick path checks with
// one atomic load while no mark is pending. Marking a tag again extends
// the mark, never shortens it; d == 0 ends the marks of t at once. The
// adapters hold members out with it: v2compat a member that has just
// failed or keeps answering stale, etcdbalance one behind the client's
// revision.
func (p *Picker) Mark(addr string, t Tags, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("picker: Mark %q for %v: the duration must not be negative", addr, d)
	}
	e := p.find(p.load(), addr)
	if e == nil {
		return unknownEndpoint(addr)
	}
	if d == 0 {
		for b := uint(0); b < 32; b++ {
			if t&(1<<b) != 0 {
				atomic.StoreInt64(&e.markUntil[b], 0)
			}
		}
		updateBits(&e.marks, 0, uint32(t))
		return nil
	}
	now := p.now()
	until := now + int64(d)
	if until < now {
		until = math.MaxInt64 // overflow: for ever
	}
	for b := uint(0); b < 32; b++ {
		if t&(1<<b) != 0 {
			raiseTo(&e.markUntil[b], until)
		}
	}
	updateBits(&e.marks, uint32(t), 0)
	lowerTo(&p.markDue, until)
	return nil
}

// expireMarks clears the marks that are due, when one is. One caller
// wins the race on markDue and scans; the others go on with marks that
// are at most that scan late. A Mark that extends a mark while the scan
// clears it sets it again right after.
func (p *Picker) expireMarks(now int64) {
	due := atomic.LoadInt64(&p.markDue)
	if due == 0 || now < due || !atomic.CompareAndSwapInt64(&p.markDue, due, 0) {
		return
	}
	for _, e := range p.load().eps {
		m := atomic.LoadUint32(&e.marks)
		for b := uint(0); m != 0; b++ {
			bit := uint32(1) << b
			if m&bit == 0 {
				continue
			}
			m &^= bit
			if u := atomic.LoadInt64(&e.markUntil[b]); u > now {
				lowerTo(&p.markDue, u)
				continue
			}
			updateBits(&e.marks, 0, bit)
			if u := atomic.LoadInt64(&e.markUntil[b]); u > now {
				updateBits(&e.marks, bit, 0)
				lowerTo(&p.markDue, u)
			}
		}
	}
}

// listed reports whether addr is in addrs.
func listed(addrs []string, addr string) bool {
	for _, a := range addrs {
		if a == addr {
			return true
		}
	}
	return false
}

func (p *Picker) find(st *state, addr string) *endpoint {
	for _, e := range st.eps {
		if e.addr == addr {
			return e
		}
	}
	return nil
}

func (p *Picker) shuffle(eps []*endpoint) {
	for i := len(eps) - 1; i > 0; i-- {
		j := int(p.rand.Uint64() % uint64(i+1))
		eps[i], eps[j] = eps[j], eps[i]
	}
}

// maybeReshuffle installs a freshly shuffled order when the interval is up.
// One caller wins the race on nextReshuffle; a concurrent SetEndpoints wins
// over it (it reshuffles anyway).
func (p *Picker) maybeReshuffle(now int64) {
	next := atomic.LoadInt64(&p.nextReshuffle)
	if now < next || !atomic.CompareAndSwapInt64(&p.nextReshuffle, next, now+p.jittered()) {
		return
	}
	old := p.load()
	eps := make([]*endpoint, len(old.eps))
	copy(eps, old.eps)
	p.shuffle(eps)
	atomic.CompareAndSwapPointer(&p.st, unsafe.Pointer(old), unsafe.Pointer(&state{eps: eps}))
}

// Pick chooses an endpoint for r. The ticket must be handed back to Done.
func (p *Picker) Pick(r Request) (Ticket, error) {
	now := p.now()
	cl := r.Class
	if cl >= numClasses {
		cl = ClassPoint
	}
	if p.s.reshuffle > 0 && now >= atomic.LoadInt64(&p.nextReshuffle) {
		p.maybeReshuffle(now)
	}
	if due := atomic.LoadInt64(&p.markDue); due != 0 && now >= due {
		p.expireMarks(now)
	}
	st := p.load()
	n := len(st.eps)
	if n == 0 {
		return Ticket{}, ErrNoEndpoints
	}
	var mask, ejected uint64
	for i, e := range st.eps {
		if e.tagsNow()&r.Exclude != 0 || listed(r.Skip, e.addr) {
			continue
		}
		if e.ejected() {
			if r.Kind == Unary && e.probeDue(now) && atomic.CompareAndSwapInt32(&e.probing, 0, 1) {
				return p.probe(e, now, r.Kind, cl), nil
			}
			ejected |= 1 << uint(i)
		}
		mask |= 1 << uint(i)
	}
	if mask == 0 {
		return Ticket{}, ErrNoEligible
	}
	if mask&^ejected != 0 { // else fail open: every eligible one is ejected
		mask &^= ejected
	}
	if r.Avoid != 0 {
		if am := p.tagged(st, mask, r.Avoid); am != mask {
			mask &^= am
		}
	}
	if r.Prefer != 0 {
		if pm := p.tagged(st, mask, r.Prefer); pm != 0 {
			mask = pm
		}
	}
	var reserve uint64
	if r.Reserve != 0 {
		if rm := p.tagged(st, mask, r.Reserve); rm != 0 && rm != mask {
			reserve, mask = rm, mask&^rm
		}
	}
	i := p.choose(st, mask, r.Kind, cl, now)
	if reserve != 0 && r.Kind == Unary && (p.s.policy == polP2C || p.s.policy == polLeast) {
		i = p.maybeReserved(st, mask, reserve, i, cl, now)
	}
	t := p.issue(st.eps[i], now, r.Kind, cl, false)
	t.reserve = reserve&(1<<uint(i)) != 0
	return t, nil
}

// PickAddr issues a ticket for the named endpoint, whatever its state: for
// per-call pins, diagnostics and probes.
func (p *Picker) PickAddr(addr string, k Kind) (Ticket, error) {
	now := p.now()
	e := p.find(p.load(), addr)
	if e == nil {
		return Ticket{}, unknownEndpoint(addr)
	}
	return p.issue(e, now, k, ClassPoint, false), nil
}

// Eligible reports whether some endpoint carries none of the tags in
// exclude, whatever its ejection state: the adapters use it to tell "no
// endpoint may ever serve this" (fail at once) from "none may serve it
// now" (wait). It takes no lock and allocates nothing.
func (p *Picker) Eligible(exclude Tags) bool {
	p.expireMarks(p.now())
	for _, e := range p.load().eps {
		if e.tagsNow()&exclude == 0 {
			return true
		}
	}
	return false
}

func (p *Picker) tagged(st *state, mask uint64, t Tags) uint64 {
	var m uint64
	for i, e := range st.eps {
		if mask&(1<<uint(i)) != 0 && e.tagsNow()&t != 0 {
			m |= 1 << uint(i)
		}
	}
	return m
}

func (p *Picker) issue(e *endpoint, now int64, k Kind, c Class, probe bool) Ticket {
	atomic.AddInt64(&e.picks, 1)
	if k == Stream {
		atomic.AddInt64(&e.streams, 1)
	} else {
		atomic.AddInt64(&e.classPicks[c], 1)
		if c == ClassRange {
			atomic.AddInt64(&e.rangeIn, 1)
			atomic.StoreInt64(&e.rangeLast, now)
		}
		if atomic.AddInt64(&e.inflight, 1) == 1 {
			// The stall clock (endpoint.stalled) starts now, unless the
			// endpoint's last requests were canceled unanswered (hedge
			// losers on a member in a GC pause) and the gap since is
			// shorter than IdleGrace: the member was not idle, it did not
			// answer, and restarting the clock at each new request would
			// make it look healthy to every first attempt.
			since := e.unansweredSince(&p.s, now)
			if since == 0 {
				since = now
			}
			atomic.StoreInt64(&e.busySince, since)
		}
	}
	t := Ticket{e: e, start: now, kind: k, class: c, probe: probe}
	if k == Unary && c == ClassPoint {
		t.behindRange = atomic.LoadInt64(&e.rangeIn) > 0
	}
	return t
}

// Done hands a ticket back with its outcome. The zero Ticket is ignored.
func (p *Picker) Done(t Ticket, o Outcome) {
	e := t.e
	if e == nil {
		return
	}
	now := p.now()
	if t.kind == Stream {
		atomic.AddInt64(&e.streams, -1)
	} else {
		atomic.AddInt64(&e.inflight, -1)
		if t.class == ClassRange {
			atomic.AddInt64(&e.rangeIn, -1)
		}
		if o.Result == Canceled {
			// Not progress: the member did not answer. The oldest
			// request canceled since the last answer starts the
			// unanswered stretch (issue).
			atomic.CompareAndSwapInt64(&e.unanswered, 0, t.start)
			atomic.StoreInt64(&e.lastCancel, now)
		} else {
			atomic.StoreInt64(&e.lastDone, now)
			atomic.StoreInt64(&e.unanswered, 0)
		}
	}
	p.endSlowStart(e, now)
	// A request picked before a jump (a clock step back) measured nothing
	// real: it gives no sample, though it still counts as a success or a
	// failure.
	measured := t.kind == Unary && t.start >= atomic.LoadInt64(&p.jumpAt)
	el := now - t.start
	switch o.Result {
	case OK:
		if measured {
			if o.Latency > 0 {
				el = int64(o.Latency)
			}
			// A point read that waited behind a range read's answer on
			// the member's link measured that answer, which the cost
			// already counts (endpoint.load, the requests in flight):
			// folded in, it would keep point reads off the member for the
			// seconds the peak takes to decay, long after the range read
			// ended, and which members had such a peak, not their load,
			// would decide the share of point reads.
			if !t.behindRange {
				p.observe(e, t.class, clampSample(el), now, false, t.reserve)
			}
			e.hist[t.class].add(el, now)
		}
		p.succeed(e, now, t.probe)
	case Failed, DeadlineExceeded:
		if measured {
			min := p.s.failurePenalty
			if o.Result == DeadlineExceeded {
				min = int64(o.Timeout)
			}
			if el < min {
				el = min
			}
			p.observe(e, t.class, clampSample(el), now, true, t.reserve)
		}
		p.fail(e, now, t.probe)
	default:
		if t.probe {
			atomic.StoreInt32(&e.probing, 0)
		}
	}
}

// maxSample bounds a latency sample. A longer one would say no more than
// "avoid this member", and a clock stepped forward would otherwise charge
// every request in flight with the size of the step.
const maxSample = int64(time.Minute)

// clampSample keeps a sample in [1ns, maxSample]: a zero or negative one
// (a coarse clock, a step) must not make a member look free.
func clampSample(v int64) int64 {
	switch {
	case v < 1:
		return 1
	case v > maxSample:
		return maxSample
	}
	return v
}

// observe records a latency sample. A sample that ends a long idle spell
// of a slow endpoint (one we were avoiding) starts a slow start, so that a
// healed member is not flooded the moment it looks cheap again. raw marks a
// sample of a reserve pick, folded into the stored estimate rather than
// the idle-decayed one (see endpoint.reserveRTT).
func (p *Picker) observe(e *endpoint, c Class, v, now int64, full, raw bool) {
	med := p.median(c, now)
	ce := &e.est[c]
	if p.s.slowStart > 0 && p.s.idleDecay > 0 {
		last := atomic.LoadInt64(&ce.lastSample)
		est := math.Float64frombits(atomic.LoadUint64(&ce.estBits))
		if last != 0 && now-last > p.s.idleGrace+int64(p.s.idleDecay) && est > 2*med {
			atomic.StoreInt64(&e.slowSince, now)
		}
	}
	first := atomic.LoadUint64(&ce.estBits) == 0
	e.sample(&p.s, c, float64(v), now, med, full, raw)
	if first {
		// The median moves when an endpoint is first measured; without a
		// refresh, unmeasured endpoints would keep costing defaultRTT for up
		// to medianRefresh and the first measured one would take everything.
		atomic.StoreInt64(&p.medAt[c], 0)
	}
}

func (p *Picker) succeed(e *endpoint, now int64, probe bool) {
	if atomic.LoadInt64(&e.consecFail) != 0 {
		atomic.StoreInt64(&e.consecFail, 0)
	}
	if u := atomic.LoadInt64(&e.ejectedUntil); u != 0 && atomic.CompareAndSwapInt64(&e.ejectedUntil, u, 0) {
		atomic.StoreInt64(&e.lastEjectEnd, now)
		atomic.StoreInt64(&e.slowSince, now)
		p.Emit(Event{Kind: EventRestored, Addr: e.addr})
	}
	if probe {
		atomic.StoreInt32(&e.probing, 0)
	}
}

func (p *Picker) fail(e *endpoint, now int64, probe bool) {
	atomic.AddInt64(&e.failures, 1)
	atomic.StoreInt64(&e.lastFail, now)
	c := atomic.AddInt64(&e.consecFail, 1)
	if probe {
		p.eject(e, now, ReasonProbeFailed)
		atomic.StoreInt32(&e.probing, 0)
	} else if p.s.ejectAfter > 0 && c >= p.s.ejectAfter && !e.ejected() {
		p.eject(e, now, ReasonFailures)
	}
	if p.s.policy == polPinned || p.s.policy == polShuffledPin {
		st := p.load()
		pin := atomic.LoadInt32(&st.pin)
		if int(pin) < len(st.eps) && st.eps[pin] == e {
			atomic.CompareAndSwapInt32(&st.pin, pin, int32((int(pin)+1)%len(st.eps)))
		}
	}
}

// eject takes e out of rotation with exponential backoff, unless it is the
// last endpoint still in rotation: the picker never ejects every endpoint.
func (p *Picker) eject(e *endpoint, now int64, reason string) {
	if !e.ejected() {
		in := 0
		for _, o := range p.load().eps {
			if o != e && !o.ejected() {
				in++
			}
		}
		if in == 0 {
			return
		}
	}
	k := atomic.LoadInt64(&e.ejections)
	if end := atomic.LoadInt64(&e.lastEjectEnd); end != 0 && now-end > p.s.ejectMax {
		k = 0
	}
	d := p.s.ejectMax
	if k < 32 && p.s.ejectBase<<uint(k) < d && p.s.ejectBase<<uint(k) > 0 {
		d = p.s.ejectBase << uint(k)
	}
	atomic.StoreInt64(&e.ejections, k+1)
	atomic.StoreInt64(&e.ejectedUntil, now+d)
	p.Emit(Event{Kind: EventEjected, Addr: e.addr, Reason: reason, Backoff: time.Duration(d)})
}

// median is the lower median of class c's measured estimates, refreshed at
// most every medianRefresh, each class on its own: a client that sends one
// class (most send only point reads) pays for that one only, which matters
// when a client picks less often than medianRefresh and so refreshes on
// nearly every pick. defaultRTT while nothing is measured.
func (p *Picker) median(c Class, now int64) float64 {
	at := atomic.LoadInt64(&p.medAt[c])
	if at == 0 || now-at >= medianRefresh {
		if atomic.CompareAndSwapInt64(&p.medAt[c], at, now) {
			atomic.StoreUint64(&p.medBits[c], medianBits(p.load().eps, c))
		}
	}
	if b := atomic.LoadUint64(&p.medBits[c]); b != 0 {
		return math.Float64frombits(b)
	}
	return p.s.defaultRTT
}

// medianBits finds the lower median without allocating: each estimate is
// loaded once into an array on the stack (at most MaxEndpoints), then
// selected in O(n²) over the copies.
func medianBits(eps []*endpoint, c Class) uint64 {
	var vals [MaxEndpoints]uint64
	k := 0
	for _, e := range eps {
		if b := atomic.LoadUint64(&e.est[c].estBits); b != 0 && k < len(vals) {
			vals[k] = b
			k++
		}
	}
	if k == 0 {
		return 0
	}
	want := (k - 1) / 2
	for _, b := range vals[:k] {
		v := math.Float64frombits(b)
		less, equal := 0, 0
		for _, ob := range vals[:k] {
			switch ov := math.Float64frombits(ob); {
			case ov < v:
				less++
			case ov == v:
				equal++
			}
		}
		if less <= want && want < less+equal {
			return b
		}
	}
	return 0
}
