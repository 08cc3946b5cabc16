package sim

import (
	"fmt"
	"math"
	"time"
)

// FaultKind is what goes wrong with a member.
type FaultKind int

// The faults a member can suffer.
const (
	// Slow multiplies the member's service times by Fault.Factor.
	Slow FaultKind = iota + 1
	// Blackhole holds every request and answer of the member until the
	// window ends (TCP up, no answers).
	Blackhole
	// Remove makes the member refuse connections: requests fail after
	// RefuseDelay.
	Remove
)

func (k FaultKind) String() string {
	switch k {
	case Slow:
		return "slow"
	case Blackhole:
		return "blackhole"
	case Remove:
		return "remove"
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// RefuseDelay is how long a removed member takes to refuse a request: the
// round trip of a connection attempt that is answered with a reset.
const RefuseDelay = 100 * time.Microsecond

// Fault is one fault on one member for a window of virtual time, measured
// from the start of the run (warm-up included). The member heals at End; an
// End of zero means the fault lasts for the whole run.
type Fault struct {
	Kind   FaultKind
	Member int
	Start  time.Duration
	End    time.Duration
	// Factor is the service-time multiplier of a Slow fault.
	Factor float64
}

// Scenario describes one simulated cluster, its clients and its faults.
type Scenario struct {
	Name string
	// Clients is the number of client processes, each with its own engine;
	// Loops the closed request loops in each.
	Clients, Loops int
	// Members and Workers per member; MeanService is the mean of the
	// exponential service time of a healthy member.
	Members, Workers int
	MeanService      time.Duration
	// Load is the target utilisation of the healthy cluster, in (0, 1).
	Load float64
	// Deadline is each request's timeout.
	Deadline time.Duration
	// Warmup is simulated but not counted; Measure follows it.
	Warmup, Measure time.Duration
	Faults          []Fault
	// Mix, when set, gives the cluster a leader and the requests classes;
	// nil is the plain model: every request a point read, no leader.
	Mix *Mix
	// Phase, when set, cuts the measured period into phases of this length
	// (whole seconds), each reported in Result.Phases; Settle is the start
	// of each phase left out of its steady windows (see PhaseStats).
	Phase, Settle time.Duration
	// Pauses, when set, adds GC-like pauses of one member (see Pauses).
	Pauses *Pauses
}

// Mix is a request mix on a cluster with a leader. A request is a write
// with probability Writes, a range read with probability Ranges, else a
// point read. Writes go to the leader under every policy (picker's
// Request.Prefer). Point reads and writes take an exponential CPU demand of
// mean MeanService on a worker; range reads take RangeWork times that, and
// then send an answer of uniformly distributed size within ±50% of
// RangeBytes,
// over the member's link of LinkRate bytes a second, shared equally by the
// answers in transit (processor sharing, as HTTP/2 streams share a
// connection). Point answers are small and skip the link, so a member busy
// sending Lists is not slow for point reads: the case where one shared
// latency estimate misleads.
//
// The leader's service times are multiplied by 1 + WriteDrag × w / c,
// where w is the rate of writes it received over the last second
// (exponentially weighted) and c a member's capacity in requests a second
// (Workers / MeanService): replication and the raft log cost it more the
// more it writes.
type Mix struct {
	Leader     int
	Writes     float64
	Ranges     float64
	WriteDrag  float64
	RangeWork  float64
	RangeBytes float64
	LinkRate   float64 // bytes/s
}

// meanWork is the mean CPU demand of a request, in units of MeanService.
func (s Scenario) meanWork() float64 {
	if s.Mix == nil {
		return 1
	}
	return 1 + s.Mix.Ranges*(s.Mix.RangeWork-1)
}

// Base model shared by the named scenarios.
const (
	baseClients  = 10
	baseLoops    = 8
	baseMembers  = 5
	baseWorkers  = 4
	baseService  = 10 * time.Millisecond
	baseLoad     = 0.6
	baseDeadline = time.Second
	baseWarmup   = 10 * time.Second
	baseMeasure  = 60 * time.Second
	slowFactor   = 10
)

// The mix of the scenarios with a leader: 10% writes, 2% Lists of 1 MB on
// average over 10 MB/s links (100 ms alone on the link), a leader whose
// service time grows by half at 10% writes.
func baseMix() *Mix {
	return &Mix{
		Leader: 0, Writes: 0.10, Ranges: 0.03,
		WriteDrag: 2, RangeWork: 2, RangeBytes: 1 << 20, LinkRate: 20 << 20,
	}
}

func base(name string) Scenario {
	return Scenario{
		Name:    name,
		Clients: baseClients, Loops: baseLoops,
		Members: baseMembers, Workers: baseWorkers, MeanService: baseService,
		Load: baseLoad, Deadline: baseDeadline,
		Warmup: baseWarmup, Measure: baseMeasure,
	}
}

// The warm-up and measured period of the gc-pauses scenario: half the base
// model's, because it is run under four policies on five seeds.
const (
	gcPausesWarmup  = 5 * time.Second
	gcPausesMeasure = 30 * time.Second
)

// BlackholeLength is how long the blackhole scenario's window lasts; it is
// centred in the measured period.
const BlackholeLength = 15 * time.Second

// Scenarios returns the named scenarios, in a fixed order:
//
//   - homogeneous: 10 clients × 8 loops, 5 members × 4 workers, 10 ms mean
//     service, 60% load, 1 s deadline, 10 s warm-up, 60 s measured;
//   - slow-member: member 0 is 10× slower for the whole run;
//   - blackhole: member 0 is black-holed for 15 s in the middle of the
//     measured period;
//   - recovery: member 0 is 10× slower until the middle of the measured
//     period, then heals;
//   - incident: 3 clients × 27 loops at the same load (few clients, as when
//     the load balancer in front of the apiservers sent everything to one);
//   - outage: member 0 refuses connections for 15 s in the middle of the
//     measured period;
//   - lists: the base model with a leader (member 0), 10% writes and 2%
//     Lists (see baseMix);
//   - slow-followers: lists, with every follower 3× slower for the whole
//     run (a degraded disk or noisy neighbours on all of them);
//   - saturated: lists at 85% load, more than the followers alone can
//     carry once the leader's writes are counted out;
//   - gc-pauses: member 0 stops answering for 100–300 ms (uniform) at
//     exponential gaps of 2 s on average, as in a GC pause; 5 s warm-up
//     and 30 s measured, to compare hedged reads (Options.Hedge).
func Scenarios() []Scenario {
	mid := baseWarmup + baseMeasure/2
	hom := base("homogeneous")

	slow := base("slow-member")
	slow.Faults = []Fault{{Kind: Slow, Member: 0, Factor: slowFactor}}

	bh := base("blackhole")
	bh.Faults = []Fault{{Kind: Blackhole, Member: 0, Start: mid - BlackholeLength/2, End: mid + BlackholeLength/2}}

	rec := base("recovery")
	rec.Faults = []Fault{{Kind: Slow, Member: 0, Factor: slowFactor, End: mid}}

	inc := base("incident")
	inc.Clients, inc.Loops = 3, 27

	out := base("outage")
	out.Faults = []Fault{{Kind: Remove, Member: 0, Start: mid - BlackholeLength/2, End: mid + BlackholeLength/2}}

	lists := base("lists")
	lists.Clients, lists.Loops = 3, 27
	lists.Mix = baseMix()
	lists.Mix.Ranges = 0.04

	sf := base("slow-followers")
	sf.Mix = baseMix()
	for m := 0; m < sf.Members; m++ {
		if m != sf.Mix.Leader {
			sf.Faults = append(sf.Faults, Fault{Kind: Slow, Member: m, Factor: 3})
		}
	}

	sat := base("saturated")
	sat.Mix = baseMix()
	sat.Load = 0.9
	sat.Mix.Writes = 0.03

	gcp := base("gc-pauses")
	gcp.Warmup, gcp.Measure = gcPausesWarmup, gcPausesMeasure
	gcp.Pauses = &Pauses{Member: 0, MeanGap: 2 * time.Second, Min: 100 * time.Millisecond, Max: 300 * time.Millisecond}

	return []Scenario{hom, slow, bh, rec, inc, out, lists, sf, sat, gcp}
}

// ScenarioNames lists the names of Scenarios.
func ScenarioNames() []string {
	var names []string
	for _, s := range Scenarios() {
		names = append(names, s.Name)
	}
	return names
}

// Lookup returns the named scenario, from Scenarios or ScaleScenarios.
func Lookup(name string) (Scenario, bool) {
	for _, s := range append(Scenarios(), ScaleScenarios()...) {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Capacity is the healthy cluster's throughput at full utilisation, in
// requests per second: Members × Workers / MeanService.
func (s Scenario) Capacity() float64 {
	return float64(s.Members*s.Workers) / s.MeanService.Seconds() / s.meanWork()
}

// ResponseTime is the expected response time of a healthy member at the
// target load, MeanService + Wq, where Wq is the M/M/c (Erlang C) queueing
// delay with c = Workers and utilisation Load. It assumes the load is
// spread evenly, as random or round-robin picks do.
func (s Scenario) ResponseTime() time.Duration {
	c := s.Workers
	a := s.Load * float64(c) // offered load in Erlangs
	sum, term := 0.0, 1.0
	for k := 0; k < c; k++ {
		if k > 0 {
			term *= a / float64(k)
		}
		sum += term
	}
	top := term * a / float64(c) / (1 - s.Load) // a^c/c! · 1/(1-ρ)
	pWait := top / (sum + top)
	svc := float64(s.MeanService) * s.meanWork()
	wq := pWait * svc / (float64(c) * (1 - s.Load))
	if m := s.Mix; m != nil {
		svc += m.Ranges * m.RangeBytes / m.LinkRate * float64(time.Second) // unshared link
	}
	return time.Duration(math.Round(svc + wq))
}

// ThinkTime is the mean think time that puts the cluster at Load. In a
// closed system of N = Clients × Loops loops with think time Z and response
// time R, throughput is X = N / (Z + R) (Little's law). Asking for
// X = Load × Capacity gives
//
//	Z = N / (Load × Members × Workers / MeanService) − R
//
// with R from ResponseTime. For the base model, N = 80, capacity
// 2000 req/s, X = 1200 req/s, R ≈ 11.8 ms, so Z ≈ 54.9 ms.
func (s Scenario) ThinkTime() time.Duration {
	n := float64(s.Clients * s.Loops)
	cycle := n / (s.Load * s.Capacity()) // seconds
	return time.Duration(cycle*float64(time.Second)) - s.ResponseTime()
}

// Validate reports the first thing wrong with s.
func (s Scenario) Validate() error {
	// The mix first: the think time depends on it.
	if m := s.Mix; m != nil {
		switch {
		case m.Leader < 0 || m.Leader >= s.Members:
			return fmt.Errorf("sim: scenario %q: leader %d out of range", s.Name, m.Leader)
		case !(m.Writes >= 0 && m.Ranges >= 0 && m.Writes+m.Ranges < 1):
			return fmt.Errorf("sim: scenario %q: writes %v and ranges %v must be shares below 1 in all", s.Name, m.Writes, m.Ranges)
		case m.WriteDrag < 0 || m.RangeWork <= 0 || m.RangeBytes < 0 || (m.Ranges > 0 && !(m.LinkRate > 0)):
			return fmt.Errorf("sim: scenario %q: mix %+v: drag, work, bytes and link rate must be positive", s.Name, *m)
		}
	}
	switch {
	case s.Clients < 1 || s.Loops < 1:
		return fmt.Errorf("sim: scenario %q: need at least one client and one loop", s.Name)
	case s.Members < 2 || s.Members > 64:
		return fmt.Errorf("sim: scenario %q: %d members, want 2 to 64", s.Name, s.Members)
	case s.Workers < 1:
		return fmt.Errorf("sim: scenario %q: %d workers, want at least 1", s.Name, s.Workers)
	case s.MeanService <= 0 || s.Deadline <= 0 || s.Measure <= 0 || s.Warmup < 0:
		return fmt.Errorf("sim: scenario %q: service, deadline and measured period must be positive", s.Name)
	case !(s.Load > 0 && s.Load < 1):
		return fmt.Errorf("sim: scenario %q: load %v must be in (0, 1)", s.Name, s.Load)
	case s.ThinkTime() <= 0:
		return fmt.Errorf("sim: scenario %q: too few loops for load %v (think time %v)", s.Name, s.Load, s.ThinkTime())
	}
	if err := s.validatePhases(); err != nil {
		return err
	}
	if s.Pauses != nil {
		if err := s.Pauses.validate(s); err != nil {
			return err
		}
	}
	for i, f := range s.Faults {
		switch {
		case f.Kind < Slow || f.Kind > Remove:
			return fmt.Errorf("sim: scenario %q: fault %d: unknown kind %d", s.Name, i, int(f.Kind))
		case f.Member < 0 || f.Member >= s.Members:
			return fmt.Errorf("sim: scenario %q: fault %d: member %d out of range", s.Name, i, f.Member)
		case f.Start < 0 || (f.End != 0 && f.End <= f.Start):
			return fmt.Errorf("sim: scenario %q: fault %d: bad window [%v, %v)", s.Name, i, f.Start, f.End)
		case f.Kind == Slow && (!(f.Factor > 0) || math.IsInf(f.Factor, 0)):
			return fmt.Errorf("sim: scenario %q: fault %d: slow factor %v must be positive", s.Name, i, f.Factor)
		}
	}
	return nil
}
