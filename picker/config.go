package picker

import (
	"fmt"
	"math"
	"time"
)

// Policy names a selection rule. The zero value means P2CEWMA.
type Policy string

// The policies. All of them share the same ticket path and bookkeeping, so
// that a comparison between them measures only the selection rule.
const (
	// P2CEWMA picks two distinct endpoints at random and takes the one with
	// the lower cost, rtt × (outstanding+1), where rtt is a peak EWMA of
	// measured latency. Ties are broken at random. The default.
	P2CEWMA Policy = "p2c-ewma"
	// LeastOutstanding takes the endpoint with the fewest requests in
	// flight, ties broken at random.
	LeastOutstanding Policy = "least-outstanding"
	// RoundRobin cycles through the endpoints from a random offset.
	RoundRobin Policy = "round-robin"
	// ShuffledPin sends everything to one endpoint and picks a new one at
	// random on every reshuffle and after a failure.
	ShuffledPin Policy = "shuffled-pin"
	// Pinned is the stock etcd v2 client: shuffle once, then stay on one
	// endpoint until it fails. It is never reshuffled. For comparison only.
	Pinned Policy = "pinned"
)

// Policies lists every policy, default first, in a new slice: for
// benchmarks and simulations that compare them (examples/bench,
// internal/sim).
func Policies() []Policy {
	return []Policy{P2CEWMA, LeastOutstanding, RoundRobin, ShuffledPin, Pinned}
}

// ParsePolicy returns the policy named s; the empty string means P2CEWMA.
func ParsePolicy(s string) (Policy, error) {
	if s == "" {
		return P2CEWMA, nil
	}
	for _, p := range Policies() {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("picker: unknown policy %q (want one of %v)", s, Policies())
}

// MaxEndpoints is the largest endpoint set a Picker accepts. etcd clusters
// have 3 to 9 members; the limit keeps eligibility a single bit mask.
const MaxEndpoints = 64

// Config tunes a Picker. The zero value of every field selects its default;
// a negative duration switches the feature off where that is allowed.
//
// Every latency estimate below is kept per request class (Request.Class):
// point reads, range reads and writes each have their own, so that a member
// that has just sent a 2 MB List does not look slow for a Get, and the
// leader's writes (a consensus round) do not make it look slow for reads,
// which the reserve rule (ReserveRatio) depends on. The alternative,
// one estimate fed with samples divided by the answer's size, was measured
// in internal/sim (scenario lists, five seeds): it matches classes on the
// point-read p99 (both 27.5–27.9 ms, against 32.8–35.0 ms with one plain
// estimate) and does better on the range-read p99 (0 to −11%), but its
// unit (the bytes worth one service time) depends on the link (10× too
// large, the point-read p99 rose to 29 ms), it needs the answer's size,
// which gRPC's balancer never sees, and it cannot tell a slow write from a
// slow read.
type Config struct {
	// Policy is the selection rule. Default P2CEWMA.
	Policy Policy

	// Decay is the peak-EWMA time constant τ: a sample below the estimate
	// moves it by 1-exp(-Δt/τ). Default 1s, not the 10s of linkerd2-proxy,
	// Finagle, Envoy and brpc: a client that sees a member only a few times
	// a second (most of a fleet's clients) kept a member that had been busy
	// for a few milliseconds avoided for ten seconds, and all such clients
	// at once. In the scale model (internal/sim, 1000 clients, five seeds),
	// 1s with MinSampleWeight 0.2 brought the homogeneous phases' p99 from
	// 1.003× round robin's on average to 0.993× and the share oscillation
	// from up to 0.0106 to 0.0078, the fast and slow phases unchanged.
	// Above about 1/(τ·MinSampleWeight) samples a second, MinSampleWeight
	// governs instead. Must be positive.
	Decay time.Duration

	// MinSampleWeight is the least weight a sample below the estimate
	// gets: w = min(exp(-Δt/τ), 1-MinSampleWeight). With pure time decay
	// (tower, Finagle) one slow answer lingers for about τ however many fast
	// answers follow it; under heavy traffic, where samples are
	// milliseconds apart, that turns every scheduling hiccup into seconds of
	// skew. At low rates (fewer than 1/(τ·MinSampleWeight) samples a second)
	// the time decay governs as before. Default 0.2 (five fast answers take
	// a spike to a third of its height): with 0.05, a Get that waited behind
	// another client's 2 MB List kept its member avoided for about twenty
	// answers, and which members had such a spike, not their load, set the
	// shares of the Gets (harness, incident, eight seeds: read max/mean
	// 1.011–1.117, against 1.018–1.085 with 0.2 and Decay 1s). Must be in
	// [0, 1); negative disables it.
	MinSampleWeight float64

	// PeakStep bounds how far one answer can raise the estimate: at most to
	// PeakStep × the current estimate. A member that really slowed down
	// reaches its new latency after a few answers; a single hiccup (a GC
	// pause, a descheduled thread) cannot make a member look a hundred times
	// dearer than the rest and lose all its traffic. Failures and deadlines
	// are charged in full. Default 4; must be > 1; negative disables (pure
	// peak: a higher sample replaces the estimate).
	PeakStep float64

	// IdleGrace is how long an endpoint may go without a latency sample
	// before its estimate starts drifting toward the median of the others.
	// Default 250ms.
	IdleGrace time.Duration

	// IdleDecay is the time constant of that drift. Without it an endpoint
	// that was slow once is never tried again, so a healed member never
	// regains its share. Default 1s; negative disables the drift. With the
	// defaults a member whose estimate is 10× the median is tried again
	// after about 2.5s without samples.
	IdleDecay time.Duration

	// DefaultRTT is the estimate used while no endpoint has been measured;
	// once any has, unmeasured endpoints start from the median. Default 30ms
	// (linkerd2-proxy's EWMA_DEFAULT_RTT).
	DefaultRTT time.Duration

	// SlowStart is the window after an endpoint joins, returns from
	// ejection, or is sampled again after a long idle spell, during which
	// its cost is raised by SlowStartPenalty, falling linearly to 1×.
	// Default 5s; negative disables.
	SlowStart time.Duration

	// SlowStartPenalty is the cost multiplier at the start of slow start.
	// Default 3; must be ≥ 1.
	SlowStartPenalty float64

	// FailurePenalty is the smallest latency sample charged for a failure
	// that blames the endpoint, so that fast failures do not look fast.
	// Default 250ms.
	FailurePenalty time.Duration

	// EjectAfter is the number of consecutive blamed failures that ejects
	// an endpoint. Default 5; negative disables ejection. The picker never
	// ejects every endpoint: when all eligible ones are ejected it picks
	// among them anyway (fail open).
	EjectAfter int

	// EjectBase is the first ejection's length; each further ejection
	// without a healthy spell in between doubles it, up to EjectMax. When an
	// ejection ends, a single probe request decides whether the endpoint
	// returns. Defaults 1s and 30s.
	EjectBase time.Duration
	EjectMax  time.Duration

	// ReshuffleInterval is how often the endpoint order is reshuffled, so
	// that round-robin offsets, random tie-breaks and pins never line many
	// clients up on one member. Default 30s; negative disables. The Pinned
	// policy is never reshuffled.
	ReshuffleInterval time.Duration

	// ReshuffleJitter spreads each interval uniformly by ± this fraction.
	// Default 0.2; must be in [0, 1).
	ReshuffleJitter float64

	// ReserveRatio is the one knob of the reserve rule (Request.Reserve,
	// the leader for reads): a reserve endpoint becomes an ordinary P2C
	// candidate for a unary request only while every other eligible
	// endpoint's latency estimate for the request's class is more than
	// ReserveRatio times its own. The gate compares estimates, not costs:
	// an endpoint with many requests in flight is busy, not slow, and a
	// gate on cost hands the reserve a share that grows with concurrency.
	// So while the others are healthy the reserve takes only probes, which keep its estimate current: one request when its
	// estimate for the class is a second old, at most once a second and in
	// at most 1 of 2n picks (n endpoints), well below its fair share of
	// 1/n. When the others saturate or slow down, their estimates rise and
	// the gate opens; the reserve's own estimate rises as it takes on work,
	// and the others', kept fresh by the pairs that leave it out, fall as
	// they recover, which closes the gate again. Default 1.5; must be ≥ 1.
	ReserveRatio float64

	// Clock supplies the time. Default the system clock.
	//
	// The engine's time never goes backwards and never reaches 0, whatever
	// the clock does. Built with Go 1.8, which has no monotonic reading in
	// time.Now, the system clock follows NTP steps. A step forward looks
	// like an idle spell: holds end early, estimates drift to the median,
	// and samples are clamped to a minute. A step back is taken as a jump
	// forward of the engine's time by a minute, or by EjectMax, SlowStart
	// or ReshuffleInterval if longer, because the real time that
	// passed is unknown: every hold (an ejection, a slow start, a Mark no
	// longer than the jump, an adapter's hold measured with Picker.Now)
	// then ends early rather than late, and requests in flight across it
	// give no latency sample.
	Clock Clock

	// Rand supplies randomness. Default a Source seeded from the clock.
	Rand Source

	// Events, when set, is called on every state change (see Event). It
	// runs on the goroutine that caused the change, a request's among
	// them, so it must return quickly and must not call back into a pick.
	Events func(Event)
}

// Defaults, as documented on the fields of Config.
const (
	defaultDecay             = time.Second
	defaultMinSampleWeight   = 0.2
	defaultPeakStep          = 4.0
	defaultIdleGrace         = 250 * time.Millisecond
	defaultIdleDecay         = time.Second
	defaultRTT               = 30 * time.Millisecond
	defaultSlowStart         = 5 * time.Second
	defaultSlowStartPenalty  = 3.0
	defaultFailurePenalty    = 250 * time.Millisecond
	defaultEjectAfter        = 5
	defaultEjectBase         = time.Second
	defaultEjectMax          = 30 * time.Second
	defaultReshuffleInterval = 30 * time.Second
	defaultReshuffleJitter   = 0.2
	defaultReserveRatio      = 1.5
)

// reserveProbeEvery is the staleness and the interval of reserve probes
// (see ReserveRatio).
const reserveProbeEvery = int64(time.Second)

// minStepJump is the least the engine's time jumps forward when the clock
// steps back (see Config.Clock): longer than any hold an adapter measures
// with Picker.Now.
const minStepJump = time.Minute

// settings is Config with defaults applied, in the units the hot path uses.
type settings struct {
	policy         policyID
	decay          float64 // ns
	maxKeep        float64 // 1 - MinSampleWeight
	peakStep       float64 // 0 = unbounded
	idleGrace      int64   // ns
	idleDecay      float64 // ns; 0 = off
	defaultRTT     float64 // ns
	slowStart      int64   // ns; 0 = off
	slowPenalty    float64
	failurePenalty int64 // ns
	ejectAfter     int64 // 0 = off
	ejectBase      int64
	ejectMax       int64
	reshuffle      int64 // ns; 0 = off
	jitter         float64
	reserveRatio   float64
	stepJump       int64 // ns: how far the engine's time jumps on a clock step back
}

type policyID uint8

const (
	polP2C policyID = iota
	polLeast
	polRR
	polShuffledPin
	polPinned
)

func durOr(name string, d, def time.Duration, allowOff bool) (time.Duration, error) {
	switch {
	case d == 0:
		return def, nil
	case d < 0 && allowOff:
		return 0, nil
	case d < 0:
		return 0, fmt.Errorf("picker: %s %v must be positive", name, d)
	}
	return d, nil
}

func (c Config) settings() (settings, error) {
	var s settings
	pol, err := ParsePolicy(string(c.Policy))
	if err != nil {
		return s, err
	}
	switch pol {
	case P2CEWMA:
		s.policy = polP2C
	case LeastOutstanding:
		s.policy = polLeast
	case RoundRobin:
		s.policy = polRR
	case ShuffledPin:
		s.policy = polShuffledPin
	case Pinned:
		s.policy = polPinned
	}
	type durField struct {
		name     string
		in, def  time.Duration
		allowOff bool
		out      *time.Duration
	}
	var decay, grace, idle, rtt, slow, fail, eb, em, resh time.Duration
	for _, f := range []durField{
		{"Decay", c.Decay, defaultDecay, false, &decay},
		{"IdleGrace", c.IdleGrace, defaultIdleGrace, false, &grace},
		{"IdleDecay", c.IdleDecay, defaultIdleDecay, true, &idle},
		{"DefaultRTT", c.DefaultRTT, defaultRTT, false, &rtt},
		{"SlowStart", c.SlowStart, defaultSlowStart, true, &slow},
		{"FailurePenalty", c.FailurePenalty, defaultFailurePenalty, false, &fail},
		{"EjectBase", c.EjectBase, defaultEjectBase, false, &eb},
		{"EjectMax", c.EjectMax, defaultEjectMax, false, &em},
		{"ReshuffleInterval", c.ReshuffleInterval, defaultReshuffleInterval, true, &resh},
	} {
		v, err := durOr(f.name, f.in, f.def, f.allowOff)
		if err != nil {
			return s, err
		}
		*f.out = v
	}
	if em < eb {
		return s, fmt.Errorf("picker: EjectMax %v is shorter than EjectBase %v", em, eb)
	}
	s.decay, s.idleGrace, s.idleDecay = float64(decay), int64(grace), float64(idle)
	s.defaultRTT, s.slowStart, s.failurePenalty = float64(rtt), int64(slow), int64(fail)
	s.ejectBase, s.ejectMax, s.reshuffle = int64(eb), int64(em), int64(resh)
	if pol == Pinned {
		s.reshuffle = 0
	}
	s.stepJump = int64(minStepJump)
	for _, d := range []int64{s.ejectMax, s.slowStart, s.reshuffle} {
		if d > s.stepJump {
			s.stepJump = d
		}
	}

	switch {
	case c.EjectAfter == 0:
		s.ejectAfter = defaultEjectAfter
	case c.EjectAfter < 0:
		s.ejectAfter = 0
	default:
		s.ejectAfter = int64(c.EjectAfter)
	}

	switch msw := c.MinSampleWeight; {
	case msw == 0:
		s.maxKeep = 1 - defaultMinSampleWeight
	case msw < 0:
		s.maxKeep = 1
	case msw < 1:
		s.maxKeep = 1 - msw
	default:
		return s, fmt.Errorf("picker: MinSampleWeight %v must be below 1", msw)
	}

	switch ps := c.PeakStep; {
	case ps == 0:
		s.peakStep = defaultPeakStep
	case ps < 0:
		s.peakStep = 0
	case ps > 1 && !math.IsInf(ps, 0):
		s.peakStep = ps
	default:
		return s, fmt.Errorf("picker: PeakStep %v must be a finite number > 1", ps)
	}

	s.slowPenalty = c.SlowStartPenalty
	if s.slowPenalty == 0 {
		s.slowPenalty = defaultSlowStartPenalty
	}
	if !(s.slowPenalty >= 1) || math.IsInf(s.slowPenalty, 0) {
		return s, fmt.Errorf("picker: SlowStartPenalty %v must be a finite number ≥ 1", c.SlowStartPenalty)
	}
	s.jitter = c.ReshuffleJitter
	if s.jitter == 0 {
		s.jitter = defaultReshuffleJitter
	}
	if !(s.jitter >= 0 && s.jitter < 1) {
		return s, fmt.Errorf("picker: ReshuffleJitter %v must be in [0, 1)", c.ReshuffleJitter)
	}
	s.reserveRatio = c.ReserveRatio
	if s.reserveRatio == 0 {
		s.reserveRatio = defaultReserveRatio
	}
	if !(s.reserveRatio >= 1) || math.IsInf(s.reserveRatio, 0) {
		return s, fmt.Errorf("picker: ReserveRatio %v must be a finite number ≥ 1", c.ReserveRatio)
	}
	return s, nil
}
