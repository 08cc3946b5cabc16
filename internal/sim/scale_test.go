package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Issue 14's goals for the scale model.
const (
	maxShareStdDev   = 0.02 // oscillation over the steady windows
	maxOverMeanScale = 1.05 // homogeneous phases
)

// The phases of ScaleScenario in which every member runs at the same
// speed (1 is member 0 fast, 3 member 0 slow).
const (
	phaseNormal1 = 0
	phaseNormal2 = 2
)

// TestScale runs the scale model (ScaleScenarios: 1000 clients, each with
// its own engine, 5 and 7 members, 60% and 90% load) on five seeds under
// p2c-ewma and plain round robin, checks the bookkeeping of every run, and
// judges issue 14's goals:
//
//  1. share oscillation (Oscillation.Max) ≤ 0.02;
//  2. max/mean share ≤ 1.05 in the phases where every member runs at the
//     same speed;
//  3. p99 at or below round robin's in every phase.
//
// None of the three holds on every seed and configuration, so none is
// asserted: each miss is logged as "GOAL MISSED" with its numbers (run with
// -v), and nothing looser is asserted in its place. Why they miss: each
// client sends about one request a second, so its engine samples each
// member only every few seconds and the estimates drift back to the median
// in between (Config.IdleGrace, IdleDecay). p2c-ewma then chooses about at
// random between two members, and random per-window counts are
// multinomial, about as noisy as the goals' thresholds (round robin cycles
// within each client and is smoother). Engine knobs (no slow start,
// PeakStep 1.5 or 10, IdleGrace 1–2 s, IdleDecay 3–5 s) moved the misses
// around without removing them. A member that goes back from fast to
// normal speed at 90% load keeps its surplus for the seconds the clients
// need to sample it again, which costs that phase's p99.
func TestScale(t *testing.T) {
	t.Parallel()
	for _, sc := range ScaleScenarios() {
		sc := sc
		t.Run(sc.Name, func(t *testing.T) {
			t.Parallel()
			forSeeds(t, func(t *testing.T, seed uint64) {
				p2c := scaleRun(t, sc, picker.P2CEWMA, seed)
				rr := scaleRun(t, sc, picker.RoundRobin, seed)
				require.Len(t, p2c.Phases, 4)
				require.Len(t, rr.Phases, 4)
				missed := func(format string, a ...any) { t.Logf("GOAL MISSED: "+format, a...) }
				t.Logf("oscillation: p2c-ewma %.4f %v, round-robin %.4f, %d windows",
					p2c.Oscillation.Max, p2c.Oscillation.ShareStdDev, rr.Oscillation.Max, p2c.Oscillation.Windows)
				if p2c.Oscillation.Max > maxShareStdDev {
					missed("share oscillation %.4f > %.2f", p2c.Oscillation.Max, maxShareStdDev)
				}
				for k := range p2c.Phases {
					pp, rp := p2c.Phases[k], rr.Phases[k]
					t.Logf("phase %d [%gs, %gs): p2c-ewma p99 %.1f ms max/mean %.4f shares %v | round-robin p99 %.1f ms max/mean %.4f",
						k, pp.StartS, pp.EndS, pp.Latency.P99, pp.MaxOverMeanShare, pp.MemberShare, rp.Latency.P99, rp.MaxOverMeanShare)
					if pp.Latency.P99 > rp.Latency.P99 {
						missed("phase %d: p2c-ewma p99 %.1f ms > round robin's %.1f ms", k, pp.Latency.P99, rp.Latency.P99)
					}
					if (k == phaseNormal1 || k == phaseNormal2) && pp.MaxOverMeanShare > maxOverMeanScale {
						missed("phase %d: p2c-ewma max/mean share %.4f > %.2f", k, pp.MaxOverMeanShare, maxOverMeanScale)
					}
				}
			})
		})
	}
}

// scaleRun runs sc under pol; round robin runs without ejection, as the
// stock clients do.
func scaleRun(t *testing.T, sc Scenario, pol picker.Policy, seed uint64) Result {
	t.Helper()
	opt := Options{Scenario: sc, Policy: pol, Seed: seed}
	if StandsForStockClient(pol) {
		opt.Engine.EjectAfter = -1
	}
	r, err := Run(opt)
	require.NoError(t, err, "%s/%s/seed=%d", sc.Name, pol, seed)
	checkBookkeeping(t, runKey{scenario: sc.Name, policy: pol, seed: seed}, r)
	require.NotNil(t, r.Oscillation, fmt.Sprintf("%s: no oscillation statistics", sc.Name))
	return r
}

// TestPhaseStats checks the phase arithmetic on a short run: phases, their
// windows and the pooled oscillation.
func TestPhaseStats(t *testing.T) {
	sc := ScaleScenario(5, 0.6)
	sc.Clients, sc.Measure = 100, 2*scalePhase
	sc.Faults = nil
	r, err := Run(Options{Scenario: sc, Seed: 1})
	require.NoError(t, err)
	require.Len(t, r.Phases, 2)
	assert.Equal(t, 5.0, r.Phases[0].StartS)
	assert.Equal(t, 15.0, r.Phases[0].EndS)
	assert.Equal(t, 25.0, r.Phases[1].EndS)
	require.NotNil(t, r.Oscillation)
	assert.Equal(t, 2*int(scalePhase-scaleSettle)/1e9, r.Oscillation.Windows)
	for _, ps := range r.Phases {
		sum := 0.0
		for m, s := range ps.MemberShare {
			sum += s
			assert.Greater(t, ps.ShareStdDev[m], 0.0, "member %d: no spread over 7 windows of ~24 picks", m)
		}
		assert.InDelta(t, 1, sum, 1e-4)
		assert.Greater(t, ps.Latency.P99, 0.0)
	}
	for m, sd := range r.Oscillation.ShareStdDev {
		assert.LessOrEqual(t, sd, r.Oscillation.Max, "member %d", m)
	}

	bad := sc
	bad.Settle = bad.Phase
	require.ErrorContains(t, bad.Validate(), "settle 10s")
	bad = sc
	bad.Phase = 1500 * time.Millisecond
	require.ErrorContains(t, bad.Validate(), "phase 1.5s")
}
