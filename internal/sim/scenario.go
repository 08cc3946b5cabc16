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

func base(name string) Scenario {
	return Scenario{
		Name:    name,
		Clients: baseClients, Loops: baseLoops,
		Members: baseMembers, Workers: baseWorkers, MeanService: baseService,
		Load: baseLoad, Deadline: baseDeadline,
		Warmup: baseWarmup, Measure: baseMeasure,
	}
}

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
//     measured period.
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

	return []Scenario{hom, slow, bh, rec, inc, out}
}

// ScenarioNames lists the names of Scenarios.
func ScenarioNames() []string {
	var names []string
	for _, s := range Scenarios() {
		names = append(names, s.Name)
	}
	return names
}

// Lookup returns the named scenario.
func Lookup(name string) (Scenario, bool) {
	for _, s := range Scenarios() {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Capacity is the healthy cluster's throughput at full utilisation, in
// requests per second: Members × Workers / MeanService.
func (s Scenario) Capacity() float64 {
	return float64(s.Members*s.Workers) / s.MeanService.Seconds()
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
	wq := pWait * float64(s.MeanService) / (float64(c) * (1 - s.Load))
	return s.MeanService + time.Duration(math.Round(wq))
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
