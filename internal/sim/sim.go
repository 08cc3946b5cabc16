package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Options select one run: a scenario, a policy and a seed.
type Options struct {
	Scenario Scenario
	// Policy is the selection rule of every client; empty means P2CEWMA.
	Policy picker.Policy
	// Seed fixes every random draw: think times, service demands and the
	// engines' sources. The same seed gives the same draws to every policy:
	// the k-th request of a loop has the same think time and service demand
	// whichever policy runs (the times at which they happen differ).
	Seed uint64
	// Engine is the engine configuration of every client, for experiments
	// with its tuning. Policy, Clock and Rand are set by the simulation; the
	// zero value gives the engine's defaults.
	Engine picker.Config
	// Estimates and Leader choose how requests of a scenario with a Mix
	// are described to the engine, for comparisons; the zero values are
	// what the adapters do.
	Estimates Estimates
	Leader    LeaderRule
	// Hedge, when set, hedges reads (see Hedge).
	Hedge *Hedge
}

// Estimates is how the latency of the request classes reaches the engine.
type Estimates int

const (
	// PerClass sets picker.Request.Class: one estimate per class.
	PerClass Estimates = iota
	// Shared describes every request as ClassPoint: one estimate for all,
	// as before classes.
	Shared
	// Normalized is Shared with each range read's sample divided by
	// 1 + bytes / (LinkRate × MeanService), the answer's size in units of
	// what the link sends in one mean service time: the alternative to
	// classes, size-normalised samples.
	Normalized
)

// LeaderRule is how reads treat the leader.
type LeaderRule int

const (
	// Reserve holds the leader in reserve (picker.Request.Reserve).
	Reserve LeaderRule = iota
	// Avoid gives it reads only when no follower is eligible
	// (picker.Request.Avoid).
	Avoid
	// Ordinary treats it like any member.
	Ordinary
)

var (
	estimatesNames = []string{"per-class", "shared", "normalized"}
	leaderNames    = []string{"reserve", "avoid", "ordinary"}
)

func nameOf(names []string, i int) string {
	if i >= 0 && i < len(names) {
		return names[i]
	}
	return fmt.Sprintf("%d", i)
}

func (e Estimates) String() string  { return nameOf(estimatesNames, int(e)) }
func (l LeaderRule) String() string { return nameOf(leaderNames, int(l)) }

// ParseEstimates returns the Estimates named s: per-class, shared or
// normalized.
func ParseEstimates(s string) (Estimates, error) {
	for i, n := range estimatesNames {
		if n == s {
			return Estimates(i), nil
		}
	}
	return 0, fmt.Errorf("sim: unknown estimates %q (want one of %v)", s, estimatesNames)
}

// ParseLeaderRule returns the LeaderRule named s: reserve, avoid or
// ordinary.
func ParseLeaderRule(s string) (LeaderRule, error) {
	for i, n := range leaderNames {
		if n == s {
			return LeaderRule(i), nil
		}
	}
	return 0, fmt.Errorf("sim: unknown leader rule %q (want one of %v)", s, leaderNames)
}

// leaderTag marks the leader in every engine.
const leaderTag picker.Tags = 1

// epoch is the wall time that virtual time 0 stands for. Any fixed instant
// does: the engine only uses differences.
var epoch = time.Date(2017, time.November, 1, 0, 0, 0, 0, time.UTC)

// virtualClock is a picker.Clock over the simulation's virtual time.
type virtualClock struct{ now *int64 }

func (c virtualClock) Now() time.Time { return epoch.Add(time.Duration(*c.now)) }

// request is one request in flight (or sitting in a member's queue after
// its client gave up on it).
type request struct {
	class    picker.Class
	size     float64 // answer size in bytes, for a range read
	bytes    float64 // left to send on the link
	loop     *loop
	member   int
	ticket   picker.Ticket
	issued   int64   // virtual ns
	work     float64 // service demand in units of the mean service time
	returned bool    // the ticket has been handed back to the engine
	measured bool    // issued inside the measured period
	bhWindow bool    // issued while it could be caught by the tracked black hole
	// Hedging: the copy of this read, or the read this is a copy of.
	hedge, orig *request
}

// loop is one closed request loop, with its own random stream.
type loop struct {
	id     int // index in sim.loops
	client *client
	rng    *rand.Rand
}

// client is one client process with its own engine.
type client struct {
	eng *picker.Picker
	// Black-hole tracking: the engine's estimate of the black-holed member
	// when the window opened, and when this client's engine first charged
	// it for the stall.
	preEstimate time.Duration
	charged     bool
	chargedAt   int64
	tokens      float64 // hedge budget (Options.Hedge)
}

// member is one etcd member: workers, a FIFO wait queue and its faults.
type member struct {
	addr       string
	factor     float64
	busy       int
	inService  []*request
	queue      fifo
	blackholed bool
	removed    bool
	heldReqs   []*request // sent during a black hole, not yet delivered
	heldAns    []*request // answered during a black hole, not yet delivered
	epoch      uint64     // bumped on removal: pending completions are void
	busyNs     float64    // worker-ns busy inside the measured period
	lastChange int64
	// The link (Mix): range answers in transit, sharing it equally.
	sending   []*request
	linkAt    int64  // when the bytes left were last brought up to date
	linkEpoch uint64 // bumped whenever the next completion moves
	// The leader's write rate, writes/s exponentially weighted over 1 s.
	writeRate float64
	writeAt   int64
}

// bhTrack follows the first Blackhole fault of a scenario.
type bhTrack struct {
	fault      int
	member     int
	start, end int64
	afterTotal int // picks in the window after the picking client's charge
	afterTo    int // ... of which went to the black-holed member
	winReqs    int // requests issued in [start-deadline, end)
	winDead    int // ... of which ended DeadlineExceeded
	dropped    int // held requests dropped when the window ended
}

// sim is the state of one run. Time is virtual nanoseconds since the
// start of the run; everything happens in the single goroutine of Run.
type sim struct {
	sc       Scenario
	now      int64
	sched    scheduler
	dls      fifo // requests by deadline (all deadlines have the same length)
	clients  []*client
	loops    []*loop
	members  []*member
	addrIdx  map[string]int
	think    float64 // mean think time, ns
	service  float64 // mean service time, ns
	deadline int64
	opt      Options
	mStart   int64
	mEnd     int64

	active      int // loops still issuing
	outstanding int // requests whose ticket is not handed back yet
	issued      int
	returned    int

	requests  int
	deadErrs  int
	failErrs  int
	latencies []int64
	picks     []int      // measured picks per member
	readPicks []int      // ... of reads
	classLat  [3][]int64 // measured latencies by picker.Class (Mix)
	perSecond [][]int    // picks per member per second of the run
	phaseLat  [][]int64  // measured latencies by phase (Scenario.Phase)
	bh        *bhTrack
	err       error
	// Hedging and pauses (hedge.go).
	hedge      *Hedge
	hedges     int // copies sent, whole run
	reads      int // reads issued with hedging on, whole run
	hedgeWins  int
	pauses     [][2]int64 // pause windows in time order
	healthyLat []int64    // measured latencies that no pause touched
}

// mix derives an independent 64-bit seed for one random stream.
func mix(seed uint64, parts ...uint64) uint64 {
	z := seed
	for _, p := range parts {
		z ^= p + 0x9e3779b97f4a7c15
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
	}
	return z
}

// Random stream identifiers for mix.
const (
	streamLoop uint64 = iota + 1
	streamEngine
	streamPauses
)

// Run simulates one scenario under one policy.
func Run(opt Options) (Result, error) {
	sc := opt.Scenario
	if err := sc.Validate(); err != nil {
		return Result{}, err
	}
	pol, err := picker.ParsePolicy(string(opt.Policy))
	if err != nil {
		return Result{}, err
	}
	s := &sim{
		sc:       sc,
		addrIdx:  make(map[string]int, sc.Members),
		think:    float64(sc.ThinkTime()),
		service:  float64(sc.MeanService),
		deadline: int64(sc.Deadline),
		mStart:   int64(sc.Warmup),
		mEnd:     int64(sc.Warmup + sc.Measure),
		picks:    make([]int, sc.Members),
		opt:      opt,
	}
	s.readPicks = make([]int, sc.Members)
	if opt.Hedge != nil {
		h, err := opt.Hedge.withDefaults()
		if err != nil {
			return Result{}, err
		}
		s.hedge = &h
	}
	if sc.Phase > 0 {
		s.phaseLat = make([][]int64, sc.Measure/sc.Phase)
	}
	s.perSecond = make([][]int, int(s.mEnd/int64(time.Second))+1)
	for i := range s.perSecond {
		s.perSecond[i] = make([]int, sc.Members)
	}
	addrs := make([]string, sc.Members)
	for i := 0; i < sc.Members; i++ {
		addrs[i] = fmt.Sprintf("member-%d", i)
		s.addrIdx[addrs[i]] = i
		s.members = append(s.members, &member{addr: addrs[i], factor: 1})
	}
	clock := virtualClock{now: &s.now}
	for c := 0; c < sc.Clients; c++ {
		cfg := opt.Engine
		cfg.Policy, cfg.Clock = pol, clock
		cfg.Rand = picker.NewSource(mix(opt.Seed, streamEngine, uint64(c)))
		eng, err := picker.New(cfg)
		if err != nil {
			return Result{}, fmt.Errorf("sim: engine config: %w", err)
		}
		if err := eng.SetEndpoints(addrs); err != nil {
			return Result{}, err
		}
		if sc.Mix != nil {
			if err := eng.UpdateTags(addrs[sc.Mix.Leader], leaderTag, 0); err != nil {
				return Result{}, err
			}
		}
		cl := &client{eng: eng}
		s.clients = append(s.clients, cl)
		for l := 0; l < sc.Loops; l++ {
			seed := mix(opt.Seed, streamLoop, uint64(c), uint64(l))
			s.loops = append(s.loops, &loop{id: len(s.loops), client: cl, rng: rand.New(rand.NewPCG(seed, ^seed))})
		}
	}
	for i, f := range sc.Faults {
		s.sched.schedule(int64(f.Start), evFaultOn, i, 0, nil)
		if f.End > 0 {
			s.sched.schedule(int64(f.End), evFaultOff, i, 0, nil)
		}
		if f.Kind == Blackhole && s.bh == nil {
			s.bh = &bhTrack{fault: i, member: f.Member, start: int64(f.Start), end: int64(f.End)}
			if f.End == 0 {
				s.bh.end = s.mEnd
			}
		}
	}
	s.addPauses()
	// Every loop starts with a think time, so that they do not start in step.
	for i, l := range s.loops {
		s.sched.schedule(s.thinkTime(l), evWake, i, 0, nil)
		s.active++
	}
	s.run()
	if s.err != nil {
		return Result{}, s.err
	}
	return s.result(pol), nil
}

func (s *sim) thinkTime(l *loop) int64 {
	return int64(l.rng.ExpFloat64() * s.think)
}

// run processes the agenda and the deadlines in time order until every
// loop has stopped and every ticket has been handed back.
func (s *sim) run() {
	for s.err == nil {
		if s.active == 0 && s.outstanding == 0 {
			return
		}
		at, ok := s.sched.peek()
		if s.dls.len() > 0 {
			// An answer at the very instant of the deadline is in time: the
			// deadline goes after events at the same instant.
			if due := s.dls.front().issued + s.deadline; !ok || due < at {
				r := s.dls.pop()
				s.now = due
				if !r.returned {
					s.finish(r, picker.DeadlineExceeded)
				}
				continue
			}
		}
		if !ok {
			return
		}
		e := s.sched.pop()
		s.now = e.at
		switch e.kind {
		case evWake:
			s.issue(s.loops[e.id])
		case evServed:
			s.served(e.id, e.epoch, e.req)
		case evSent:
			s.sent(e.id, e.epoch)
		case evRefused:
			if !e.req.returned {
				s.finish(e.req, picker.Failed)
			}
		case evFaultOn:
			s.faultOn(e.id)
		case evFaultOff:
			s.faultOff(e.id)
		case evHedge:
			s.sendHedge(e.req)
		}
	}
}

func (s *sim) issue(l *loop) {
	c := l.client
	bh := s.bh
	inBH := bh != nil && s.now >= bh.start && s.now < bh.end
	if inBH && !c.charged {
		s.checkCharge(c)
	}
	work := l.rng.ExpFloat64()
	cls, bytes := picker.ClassPoint, 0.0
	if mx := s.sc.Mix; mx != nil {
		// Erlang-4 demand (coefficient of variation 0.5): an etcd Get's
		// work varies far less than an exponential's, whose tail alone
		// would set the p99 and hide the routing. Then two more draws, in
		// the same order whatever they decide: the class, and the size of
		// a range answer, uniform within ±50% of the mean (an apiserver
		// Lists a few prefixes, each about the same size every time).
		for k := 0; k < 3; k++ {
			work += l.rng.ExpFloat64()
		}
		work /= 4
		u, b := l.rng.Float64(), (0.5+l.rng.Float64())*mx.RangeBytes
		switch {
		case u < mx.Writes:
			cls = picker.ClassWrite
		case u < mx.Writes+mx.Ranges:
			cls, bytes = picker.ClassRange, b
			work *= mx.RangeWork
		}
	}
	t, err := c.eng.Pick(s.requestFor(cls))
	if err != nil {
		s.err = fmt.Errorf("sim: pick at %v: %w", time.Duration(s.now), err)
		return
	}
	m, ok := s.addrIdx[t.Addr()]
	if !ok {
		s.err = fmt.Errorf("sim: engine picked unknown endpoint %q", t.Addr())
		return
	}
	r := &request{class: cls, size: bytes, bytes: bytes, loop: l, member: m, ticket: t, issued: s.now, work: work}
	s.issued++
	s.outstanding++
	s.dls.push(r)
	s.perSecond[s.now/int64(time.Second)][m]++
	if s.now >= s.mStart && s.now < s.mEnd {
		r.measured = true
		s.requests++
		s.picks[m]++
		if cls != picker.ClassWrite {
			s.readPicks[m]++
		}
	}
	if bh != nil {
		if s.now >= bh.start-s.deadline && s.now < bh.end {
			r.bhWindow = true
			bh.winReqs++
		}
		if inBH && c.charged {
			bh.afterTotal++
			if m == bh.member {
				bh.afterTo++
			}
		}
	}
	s.arrive(r)
	s.scheduleHedge(r)
}

// requestFor describes a request of class cls to the engine, by the
// run's Estimates and LeaderRule.
func (s *sim) requestFor(cls picker.Class) picker.Request {
	if s.sc.Mix == nil {
		return picker.Request{}
	}
	var r picker.Request
	if s.opt.Estimates == PerClass {
		r.Class = cls
	}
	switch {
	case cls == picker.ClassWrite:
		r.Prefer = leaderTag
	case s.opt.Leader == Reserve && cls != picker.ClassRange:
		// As etcdbalance: Lists are shared by cost with the leader.
		r.Reserve = leaderTag
	case s.opt.Leader == Avoid:
		r.Avoid = leaderTag
	}
	return r
}

// checkCharge records the first moment c's engine charges the black-holed
// member for its stall: it has requests in flight there and its estimate
// exceeds the one it had when the window opened (no answer can have
// lowered or raised it since, other than the stall).
func (s *sim) checkCharge(c *client) {
	addr := s.members[s.bh.member].addr
	for _, st := range c.eng.Snapshot() {
		if st.Addr == addr {
			if st.InFlight > 0 && st.Estimate > c.preEstimate {
				c.charged, c.chargedAt = true, s.now
			}
			return
		}
	}
}

// arrive delivers r to its member.
func (s *sim) arrive(r *request) {
	m := s.members[r.member]
	if mx := s.sc.Mix; mx != nil && r.class == picker.ClassWrite && r.member == mx.Leader && !m.removed && !m.blackholed {
		m.writeRate = m.writeRate*s.decayed(m) + 1 // per second: the weight is 1 s
		m.writeAt = s.now
	}
	switch {
	case m.removed:
		s.sched.schedule(s.now+int64(RefuseDelay), evRefused, 0, 0, r)
	case m.blackholed:
		m.heldReqs = append(m.heldReqs, r)
	case m.busy < s.sc.Workers:
		s.startService(r.member, r)
	default:
		m.queue.push(r)
	}
}

// decayed is the weight left of the leader's write rate since it last
// changed.
func (s *sim) decayed(m *member) float64 {
	return math.Exp(-float64(s.now-m.writeAt) / float64(time.Second))
}

// leaderFactor is the leader's service-time multiplier from its write rate.
func (s *sim) leaderFactor(mi int) float64 {
	mx := s.sc.Mix
	if mx == nil || mi != mx.Leader || mx.WriteDrag == 0 {
		return 1
	}
	m := s.members[mi]
	perMember := float64(s.sc.Workers) / s.sc.MeanService.Seconds()
	return 1 + mx.WriteDrag*m.writeRate*s.decayed(m)/perMember
}

// account adds the member's busy worker time since its last change,
// clipped to the measured period.
func (s *sim) account(m *member) {
	from, to := max(m.lastChange, s.mStart), min(s.now, s.mEnd)
	if to > from {
		m.busyNs += float64(m.busy) * float64(to-from)
	}
	m.lastChange = s.now
}

func (s *sim) startService(mi int, r *request) {
	m := s.members[mi]
	s.account(m)
	m.busy++
	m.inService = append(m.inService, r)
	d := int64(r.work * s.service * m.factor * s.leaderFactor(mi))
	if d < 1 {
		d = 1
	}
	s.sched.schedule(s.now+d, evServed, mi, m.epoch, r)
}

func (s *sim) served(mi int, epoch uint64, r *request) {
	m := s.members[mi]
	if epoch != m.epoch {
		return // the member was removed while serving r; r has failed already
	}
	s.account(m)
	m.busy--
	if i := slices.Index(m.inService, r); i >= 0 {
		m.inService = slices.Delete(m.inService, i, i+1)
	}
	if r.bytes > 0 {
		s.linkAdvance(m)
		m.sending = append(m.sending, r)
		s.linkSchedule(mi)
	} else {
		s.deliver(m, r)
	}
	if m.queue.len() > 0 {
		s.startService(mi, m.queue.pop())
	}
}

// deliver sends r's answer to its client.
func (s *sim) deliver(m *member, r *request) {
	switch {
	case m.blackholed:
		m.heldAns = append(m.heldAns, r)
	case !r.returned:
		s.finish(r, picker.OK)
	}
}

// linkAdvance brings the bytes left of every answer in transit up to now.
func (s *sim) linkAdvance(m *member) {
	if n := len(m.sending); n > 0 {
		sent := float64(s.now-m.linkAt) / 1e9 * s.sc.Mix.LinkRate / float64(n)
		for _, r := range m.sending {
			r.bytes -= sent
		}
	}
	m.linkAt = s.now
}

// linkSchedule schedules the next completion on the link, voiding the
// one scheduled before.
func (s *sim) linkSchedule(mi int) {
	m := s.members[mi]
	m.linkEpoch++
	if len(m.sending) == 0 {
		return
	}
	least := m.sending[0].bytes
	for _, r := range m.sending[1:] {
		least = min(least, r.bytes)
	}
	d := int64(math.Ceil(max(least, 0) * float64(len(m.sending)) / s.sc.Mix.LinkRate * 1e9))
	s.sched.schedule(s.now+max(d, 1), evSent, mi, m.linkEpoch, nil)
}

// sent finishes the answers whose last byte has left.
func (s *sim) sent(mi int, epoch uint64) {
	m := s.members[mi]
	if epoch != m.linkEpoch {
		return
	}
	s.linkAdvance(m)
	var done []*request
	m.sending = slices.DeleteFunc(m.sending, func(r *request) bool {
		if r.bytes <= 1 { // rounding: a byte is nothing
			done = append(done, r)
			return true
		}
		return false
	})
	s.linkSchedule(mi)
	for _, r := range done {
		r.bytes = 0
		s.deliver(m, r)
	}
}

// finish hands r's ticket back to its engine, and its partner's if it was
// hedged (Canceled, or DeadlineExceeded when r ran out of time), and sends
// the loop thinking. Callers check r.returned first: a late answer is
// simply ignored.
func (s *sim) finish(r *request, res picker.Result) {
	s.handBack(r, res)
	if p := partner(r); p != nil && !p.returned {
		pr := picker.Canceled
		if res == picker.DeadlineExceeded {
			pr = picker.DeadlineExceeded
		}
		s.handBack(p, pr)
	}
	call := r // the request the loop sent first
	if r.orig != nil {
		call = r.orig
		if res == picker.OK && call.measured {
			s.hedgeWins++
		}
	}
	if call.measured {
		s.latencies = append(s.latencies, s.now-call.issued)
		s.recordPhase(call)
		if s.sc.Mix != nil {
			s.classLat[call.class] = append(s.classLat[call.class], s.now-call.issued)
		}
		if s.pauses != nil && s.healthy(call.issued, s.now) {
			s.healthyLat = append(s.healthyLat, s.now-call.issued)
		}
		switch res {
		case picker.DeadlineExceeded:
			s.deadErrs++
		case picker.Failed:
			s.failErrs++
		}
	}
	if call.bhWindow && res == picker.DeadlineExceeded {
		s.bh.winDead++
	}
	if next := s.now + s.thinkTime(call.loop); next < s.mEnd {
		s.sched.schedule(next, evWake, call.loop.id, 0, nil)
	} else {
		s.active--
	}
}

// handBack returns r's ticket to its engine with res.
func (s *sim) handBack(r *request, res picker.Result) {
	r.returned = true
	s.returned++
	s.outstanding--
	o := picker.Outcome{Result: res}
	if res == picker.DeadlineExceeded {
		o.Timeout = s.sc.Deadline
	}
	if res == picker.OK && r.class == picker.ClassRange && s.opt.Estimates == Normalized {
		unit := s.sc.Mix.LinkRate * s.sc.MeanService.Seconds()
		o.Latency = time.Duration(float64(s.now-r.issued) / (1 + r.size/unit))
	}
	r.loop.client.eng.Done(r.ticket, o)
}

func (s *sim) faultOn(i int) {
	f := s.sc.Faults[i]
	m := s.members[f.Member]
	switch f.Kind {
	case Slow:
		m.factor = f.Factor
	case Blackhole:
		m.blackholed = true
		if s.bh != nil && s.bh.fault == i {
			for _, c := range s.clients {
				for _, st := range c.eng.Snapshot() {
					if st.Addr == m.addr {
						c.preEstimate = st.Estimate
					}
				}
			}
		}
	case Remove:
		m.removed = true
		m.epoch++
		s.account(m)
		m.busy = 0
		var gone []*request
		gone = append(gone, m.inService...)
		gone = append(gone, m.queue.drain()...)
		gone = append(gone, m.heldReqs...)
		gone = append(gone, m.heldAns...)
		gone = append(gone, m.sending...)
		m.inService, m.heldReqs, m.heldAns, m.sending = nil, nil, nil, nil
		m.linkEpoch++
		for _, r := range gone {
			if !r.returned {
				s.sched.schedule(s.now+int64(RefuseDelay), evRefused, 0, 0, r)
			}
		}
	}
}

func (s *sim) faultOff(i int) {
	f := s.sc.Faults[i]
	m := s.members[f.Member]
	switch f.Kind {
	case Slow:
		m.factor = 1
	case Blackhole:
		m.blackholed = false
		ans, reqs := m.heldAns, m.heldReqs
		m.heldAns, m.heldReqs = nil, nil
		for _, r := range ans {
			if !r.returned {
				s.finish(r, picker.OK)
			}
		}
		for _, r := range reqs {
			if r.returned {
				if s.bh != nil && s.bh.fault == i {
					s.bh.dropped++
				}
				continue
			}
			s.arrive(r)
		}
	case Remove:
		m.removed = false
	}
}
