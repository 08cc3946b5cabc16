package sim

import (
	"fmt"
	"math"
	"time"
)

// The scale model (issue 14): a thousand clients, each with its own engine
// and one closed request loop (one request outstanding, then an
// exponential think time), as many processes each holding a client would.
// The mean service time is what varies with members and load, so
// that Load is offered ÷ capacity in every configuration.
const (
	scaleClients = 1000
	scaleLoops   = 1
	scaleWarmup  = 5 * time.Second
	// scalePhase is how long each speed of the changing member lasts.
	scalePhase = 10 * time.Second
	// scaleSettle is the start of each phase left out of the steady
	// windows: the time the engines take to see the new speed.
	scaleSettle = 3 * time.Second
	scaleSlow   = 1.5 // the changing member's service-time factor when slow
	scaleFast   = 0.6 // ... and when fast
)

// ScaleRate is the requests a second each client of the scale model sends:
// an apiserver's storage client sends tens to hundreds, so 10 is the low
// end, 10,000 a second over the fleet.
const ScaleRate = 10

// ScaleScenario is the scale model on the given number of members at the
// given load, named scale-MEMBERS-LOAD: 1000 clients × 1 loop, each
// sending ScaleRate requests a second, 4 workers a member, the mean service
// time that makes the load 10,000 requests a second (1.2 ms for 5 members
// at 60%, 2.52 ms for 7 at 90%), 1 s deadline, 5 s warm-up, then four
// measured phases of scalePhase in which member 0 runs at normal speed,
// 0.6× (faster), normal speed, and 1.5× slower. Result.Phases reports each
// phase. The fast phase comes before the second normal one because a
// member that was slow regains its share over tens of seconds, by design
// (slow start), and that would leave the second normal phase unbalanced
// for a reason that is not herding.
func ScaleScenario(members int, load float64) Scenario {
	sc := base(fmt.Sprintf("scale-%d-%g", members, load*100))
	sc.Clients, sc.Loops, sc.Members, sc.Load = scaleClients, scaleLoops, members, load
	// Capacity = Members × Workers / MeanService, and Load × Capacity =
	// Clients × ScaleRate. A load that is not positive gives a service time
	// of zero or less, which Validate rejects by name.
	sc.MeanService = time.Duration(float64(members*sc.Workers) * load / (scaleClients * ScaleRate) * float64(time.Second))
	sc.Warmup, sc.Measure = scaleWarmup, 4*scalePhase
	sc.Phase, sc.Settle = scalePhase, scaleSettle
	at := func(k int) time.Duration { return scaleWarmup + time.Duration(k)*scalePhase }
	sc.Faults = []Fault{
		{Kind: Slow, Member: 0, Start: at(1), End: at(2), Factor: scaleFast},
		{Kind: Slow, Member: 0, Start: at(3), End: at(4), Factor: scaleSlow},
	}
	return sc
}

// ScaleScenarios are ScaleScenario on 5 and 7 members at 60% and 90% load.
// Lookup finds them; they are not in Scenarios, whose every entry the
// tests run under every policy.
func ScaleScenarios() []Scenario {
	var out []Scenario
	for _, m := range []int{5, 7} {
		for _, l := range []float64{0.6, 0.9} {
			out = append(out, ScaleScenario(m, l))
		}
	}
	return out
}

// PhaseStats describe one phase of a scenario with Phase set. Windows are
// the 1 s intervals of virtual time; the steady windows of a phase are those
// from its start plus Settle to its end.
type PhaseStats struct {
	StartS float64 `json:"start_s"`
	EndS   float64 `json:"end_s"`
	// Latency of the requests issued in the phase.
	Latency Latency `json:"latency_ms"`
	// MemberShare[m] is member m's share of the picks in the phase's steady
	// windows; MaxOverMeanShare the largest over 1/members.
	MemberShare      []float64 `json:"member_share"`
	MaxOverMeanShare float64   `json:"max_over_mean_share"`
	// ShareStdDev[m] is the standard deviation of member m's share over the
	// steady windows of the phase.
	ShareStdDev []float64 `json:"share_stddev"`
}

// Oscillation is the standard deviation of a member's share over the
// steady 1 s windows of every phase, each window measured against the mean
// share of its own phase (so that a phase change is not counted as
// oscillation): the pooled within-phase standard deviation, with one degree
// of freedom per phase taken off. ShareStdDev[m] is member m's; Max the
// largest.
type Oscillation struct {
	ShareStdDev []float64 `json:"share_stddev"`
	Max         float64   `json:"max"`
	// Windows is the number of steady windows pooled.
	Windows int `json:"windows"`
}

// validatePhases checks Phase and Settle.
func (s Scenario) validatePhases() error {
	switch {
	case s.Phase == 0 && s.Settle == 0:
		return nil
	case s.Phase < 0 || s.Phase%time.Second != 0 || s.Warmup%time.Second != 0:
		return fmt.Errorf("sim: scenario %q: phase %v and warm-up %v must be whole seconds", s.Name, s.Phase, s.Warmup)
	case s.Settle < 0 || s.Settle%time.Second != 0 || s.Settle >= s.Phase:
		return fmt.Errorf("sim: scenario %q: settle %v must be whole seconds shorter than the phase %v", s.Name, s.Settle, s.Phase)
	}
	return nil
}

// phaseOf is the index of the phase in which a request issued at t (virtual
// ns, inside the measured period) falls, or -1 when the scenario has none
// or t is past the last whole phase.
func (s *sim) phaseOf(t int64) int {
	if s.sc.Phase <= 0 {
		return -1
	}
	k := int((t - s.mStart) / int64(s.sc.Phase))
	if k >= len(s.phaseLat) {
		return -1
	}
	return k
}

// recordPhase files a measured request's latency under its phase.
func (s *sim) recordPhase(r *request) {
	if k := s.phaseOf(r.issued); k >= 0 {
		s.phaseLat[k] = append(s.phaseLat[k], s.now-r.issued)
	}
}

// phaseStats summarises every whole phase of the measured period, and the
// oscillation over their steady windows.
func (s *sim) phaseStats() ([]PhaseStats, *Oscillation) {
	if s.sc.Phase <= 0 {
		return nil, nil
	}
	sec := int64(time.Second)
	n := s.sc.Members
	osc := &Oscillation{ShareStdDev: make([]float64, n)}
	sumSq := make([]float64, n)
	dof := 0
	var out []PhaseStats
	for k := range s.phaseLat {
		from := s.mStart + int64(k)*int64(s.sc.Phase)
		to := from + int64(s.sc.Phase)
		ps := PhaseStats{StartS: float64(from) / 1e9, EndS: float64(to) / 1e9, Latency: latencyOf(s.phaseLat[k])}
		picks := make([]int, n)
		total := 0
		var shares [][]float64 // steady windows × members
		for w := from / sec; w < to/sec; w++ {
			row := s.perSecond[w]
			wt := 0
			for _, c := range row {
				wt += c
			}
			if w*sec < from+int64(s.sc.Settle) || wt == 0 {
				continue
			}
			total += wt
			sh := make([]float64, n)
			for m, c := range row {
				picks[m] += c
				sh[m] = float64(c) / float64(wt)
			}
			shares = append(shares, sh)
		}
		ps.MemberShare = make([]float64, n)
		ps.ShareStdDev = make([]float64, n)
		maxShare := 0.0
		for m, c := range picks {
			sh := float64(c) / float64(max(1, total))
			ps.MemberShare[m] = round(sh, 1e6)
			maxShare = max(maxShare, sh)
		}
		ps.MaxOverMeanShare = round(maxShare*float64(n), 1e4)
		for m := 0; m < n; m++ {
			mean := 0.0
			for _, sh := range shares {
				mean += sh[m]
			}
			mean /= float64(max(1, len(shares)))
			sq := 0.0
			for _, sh := range shares {
				sq += (sh[m] - mean) * (sh[m] - mean)
			}
			sumSq[m] += sq
			if len(shares) > 1 {
				ps.ShareStdDev[m] = round(math.Sqrt(sq/float64(len(shares)-1)), 1e6)
			}
		}
		osc.Windows += len(shares)
		if len(shares) > 1 {
			dof += len(shares) - 1
		}
		out = append(out, ps)
	}
	for m := range sumSq {
		if dof > 0 {
			osc.ShareStdDev[m] = round(math.Sqrt(sumSq[m]/float64(dof)), 1e6)
		}
		osc.Max = max(osc.Max, osc.ShareStdDev[m])
	}
	return out, osc
}
