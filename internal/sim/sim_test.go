package sim

import (
	"fmt"
	"math"
	"reflect"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seeds are the fixed seeds every threshold is judged on: each must hold
// for every seed, so the worst seed decides.
var seeds = []uint64{1, 2, 3, 4, 5}

// runKey names one simulation run. Runs are shared between tests (the
// slow-member test needs the homogeneous p99 of the same seed), so each is
// simulated once per test binary.
type runKey struct {
	scenario string
	policy   picker.Policy
	seed     uint64
	noEject  bool // engine ejection off (EjectAfter -1)
}

func (k runKey) String() string {
	s := fmt.Sprintf("%s/%s/seed=%d", k.scenario, k.policy, k.seed)
	if k.noEject {
		s += "/no-eject"
	}
	return s
}

type runEntry struct {
	once sync.Once
	res  Result
	err  error
}

var runs sync.Map // runKey → *runEntry

func simulate(k runKey) (Result, error) {
	sc, ok := Lookup(k.scenario)
	if !ok {
		return Result{}, fmt.Errorf("no scenario %q", k.scenario)
	}
	opt := Options{Scenario: sc, Policy: k.policy, Seed: k.seed}
	if k.noEject {
		opt.Engine.EjectAfter = -1
	}
	return Run(opt)
}

// result returns the (shared) result of run k and checks the bookkeeping
// that must hold for every run.
func result(t *testing.T, k runKey) Result {
	t.Helper()
	v, _ := runs.LoadOrStore(k, new(runEntry))
	e := v.(*runEntry)
	e.once.Do(func() { e.res, e.err = simulate(k) })
	if e.err != nil {
		t.Fatalf("%v: %v", k, e.err)
	}
	checkBookkeeping(t, k, e.res)
	return e.res
}

// checkBookkeeping asserts that every ticket was handed back exactly once
// and that the counts add up.
func checkBookkeeping(t *testing.T, k runKey, r Result) {
	t.Helper()
	if r.Lost != 0 {
		t.Errorf("%v: lost = %d, want 0 (tickets never handed back)", k, r.Lost)
	}
	if r.EngineInFlight != 0 {
		t.Errorf("%v: engines report %d in flight at the end, want 0 (a ticket handed back twice or never)", k, r.EngineInFlight)
	}
	if r.Requests == 0 {
		t.Fatalf("%v: no requests in the measured period", k)
	}
	if r.Errors != r.DeadlineErrors+r.FailedErrors {
		t.Errorf("%v: errors %d != deadline %d + failed %d", k, r.Errors, r.DeadlineErrors, r.FailedErrors)
	}
	sum := 0.0
	for _, s := range r.MemberShare {
		sum += s
	}
	if math.Abs(sum-1) > 1e-4 {
		t.Errorf("%v: shares sum to %v, want 1", k, sum)
	}
}

// forSeeds runs fn for every seed in a parallel subtest.
func forSeeds(t *testing.T, fn func(t *testing.T, seed uint64)) {
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			fn(t, seed)
		})
	}
}

func TestHomogeneousBalance(t *testing.T) {
	t.Parallel()
	limits := []struct {
		policy      picker.Policy
		maxOverMean float64
	}{
		{picker.P2CEWMA, 1.10},
		{picker.LeastOutstanding, 1.05},
		{picker.RoundRobin, 1.05},
	}
	forSeeds(t, func(t *testing.T, seed uint64) {
		for _, l := range limits {
			r := result(t, runKey{"homogeneous", l.policy, seed, false})
			t.Logf("%-18s max/mean %.4f shares %v p99 %.1f ms util %.3f", l.policy, r.MaxOverMeanShare, r.MemberShare, r.Latency.P99, r.Utilization)
			if r.MaxOverMeanShare > l.maxOverMean {
				t.Errorf("%s: max/mean share %.4f > %.2f (shares %v)", l.policy, r.MaxOverMeanShare, l.maxOverMean, r.MemberShare)
			}
			if r.Errors != 0 {
				t.Errorf("%s: %d errors on a healthy cluster", l.policy, r.Errors)
			}
		}
		// The think time is derived so that the cluster runs at about 60%.
		if u := result(t, runKey{"homogeneous", picker.RoundRobin, seed, false}).Utilization; u < 0.57 || u > 0.63 {
			t.Errorf("round-robin utilisation %.3f, want 0.60 ± 0.03", u)
		}
	})
}

// TestSlowMember compares p2c-ewma with round robin when one member is 10×
// slower. The round-robin baseline of the p99 ratio is plain round robin,
// as grpc's round_robin and the etcd clients do it: the engine's
// RoundRobin with ejection switched off. The engine's default RoundRobin
// ejects the slow member after its timeouts, which caps its p99 far below
// the deadline; it is reported and checked beside.
func TestSlowMember(t *testing.T) {
	t.Parallel()
	const slow = 0 // the scenario slows member 0
	forSeeds(t, func(t *testing.T, seed uint64) {
		p2c := result(t, runKey{"slow-member", picker.P2CEWMA, seed, false})
		rr := result(t, runKey{"slow-member", picker.RoundRobin, seed, true})
		rrEject := result(t, runKey{"slow-member", picker.RoundRobin, seed, false})
		hom := result(t, runKey{"homogeneous", picker.P2CEWMA, seed, false})
		t.Logf("p2c-ewma: slow share %.4f p99 %.1f ms p99.9 %.1f ms errors %d; homogeneous p99 %.1f ms",
			p2c.MemberShare[slow], p2c.Latency.P99, p2c.Latency.P999, p2c.Errors, hom.Latency.P99)
		t.Logf("round-robin, no ejection: slow share %.4f p99 %.1f ms errors %d", rr.MemberShare[slow], rr.Latency.P99, rr.Errors)
		t.Logf("round-robin, engine default (ejection): slow share %.4f p99 %.1f ms errors %d",
			rrEject.MemberShare[slow], rrEject.Latency.P99, rrEject.Errors)

		if s := p2c.MemberShare[slow]; s > 0.02 {
			t.Errorf("p2c-ewma sent %.4f of its requests to the slow member, want ≤ 0.02", s)
		}
		if p2c.Latency.P99 > 0.1*rr.Latency.P99 {
			t.Errorf("p2c-ewma p99 %.1f ms > 0.1 × round-robin p99 %.1f ms", p2c.Latency.P99, rr.Latency.P99)
		}
		if p2c.Latency.P99 > 2*hom.Latency.P99 {
			t.Errorf("p2c-ewma p99 %.1f ms > 2 × its homogeneous p99 %.1f ms", p2c.Latency.P99, hom.Latency.P99)
		}
		if p2c.Latency.P99 >= rrEject.Latency.P99 || p2c.Errors > rrEject.Errors {
			t.Errorf("p2c-ewma (p99 %.1f ms, %d errors) no better than the engine's round-robin (p99 %.1f ms, %d errors)",
				p2c.Latency.P99, p2c.Errors, rrEject.Latency.P99, rrEject.Errors)
		}
	})
}

// TestBlackhole checks that p2c-ewma stops sending to a black-holed member
// once its engine has charged the stall (see BlackholeStats), and that
// few requests time out.
func TestBlackhole(t *testing.T) {
	t.Parallel()
	forSeeds(t, func(t *testing.T, seed uint64) {
		p2c := result(t, runKey{"blackhole", picker.P2CEWMA, seed, false})
		rr := result(t, runKey{"blackhole", picker.RoundRobin, seed, false})
		b, rb := p2c.Blackhole, rr.Blackhole
		if b == nil || rb == nil {
			t.Fatal("no black-hole statistics")
		}
		t.Logf("p2c-ewma:    charged %d clients (latest %.1f ms in), after charge %d/%d to the member (%.4f), window deadline errors %d/%d (%.4f)",
			b.ChargedClients, b.MaxChargeDelayMs, b.ToMemberAfterCharge, b.RequestsAfterCharge, b.ShareAfterCharge,
			b.WindowDeadlineErrors, b.WindowRequests, b.WindowErrorRate)
		t.Logf("round-robin: after charge %d/%d to the member (%.4f), window deadline errors %d/%d (%.4f), p99.9 %.1f ms",
			rb.ToMemberAfterCharge, rb.RequestsAfterCharge, rb.ShareAfterCharge,
			rb.WindowDeadlineErrors, rb.WindowRequests, rb.WindowErrorRate, rr.Latency.P999)

		if sc, _ := Lookup("blackhole"); b.ChargedClients != sc.Clients {
			t.Errorf("p2c-ewma: %d of %d clients charged the stall", b.ChargedClients, sc.Clients)
		}
		if b.ShareAfterCharge > 0.005 {
			t.Errorf("p2c-ewma: %.4f of requests after the stall charge went to the black-holed member, want ≤ 0.005", b.ShareAfterCharge)
		}
		if b.WindowErrorRate > 0.005 {
			t.Errorf("p2c-ewma: deadline errors in the window %.4f of requests, want ≤ 0.005", b.WindowErrorRate)
		}
	})
}

// TestRecovery checks that a healed member gets its share back within
// 20 s, without a flood: see RecoveryStats for the windows.
func TestRecovery(t *testing.T) {
	t.Parallel()
	forSeeds(t, func(t *testing.T, seed uint64) {
		r := result(t, runKey{"recovery", picker.P2CEWMA, seed, false})
		rc := r.Recovery
		if rc == nil {
			t.Fatal("no recovery statistics")
		}
		t.Logf("p2c-ewma: share/fair over heal+15..20s %.3f, first window ≥ 0.75 at heal+%gs, peak 1s window %.3f at %gs",
			rc.RecoveredRatio, rc.FirstFairS, rc.PeakRatio, rc.PeakAtS)
		if rc.RecoveredRatio < 0.75 {
			t.Errorf("healed member at %.3f × its fair share over heal+15..20s, want ≥ 0.75", rc.RecoveredRatio)
		}
		if rc.PeakRatio > 2 {
			t.Errorf("healed member got %.3f × its fair share in the 1 s window at %gs, want ≤ 2", rc.PeakRatio, rc.PeakAtS)
		}
	})
}

// TestIncident is the production incident: few clients. p2c-ewma must keep
// every member near the mean; pinned, the stock v2 client, is logged beside.
func TestIncident(t *testing.T) {
	t.Parallel()
	forSeeds(t, func(t *testing.T, seed uint64) {
		p2c := result(t, runKey{"incident", picker.P2CEWMA, seed, false})
		pin := result(t, runKey{"incident", picker.Pinned, seed, false})
		t.Logf("p2c-ewma: shares %v p99 %.1f ms", p2c.MemberShare, p2c.Latency.P99)
		t.Logf("pinned:   shares %v p99 %.1f ms", pin.MemberShare, pin.Latency.P99)
		mean := 1 / float64(len(p2c.MemberShare))
		for m, s := range p2c.MemberShare {
			if r := s / mean; r < 0.85 || r > 1.15 {
				t.Errorf("p2c-ewma: member %d at %.3f × the mean share, want 0.85–1.15", m, r)
			}
		}
	})
}

// TestNoLostTickets runs every scenario under every policy and checks that
// every ticket was handed back exactly once (result checks it). The other
// tests check the same on every run they make, for all seeds.
func TestNoLostTickets(t *testing.T) {
	t.Parallel()
	for _, sc := range Scenarios() {
		for _, p := range picker.Policies {
			t.Run(sc.Name+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				result(t, runKey{sc.Name, p, 1, false})
			})
		}
	}
}

// TestDeterminism simulates runs a second time and compares every number,
// per-second pick counts included.
func TestDeterminism(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"blackhole", "outage", "recovery"} {
		for _, p := range []picker.Policy{picker.P2CEWMA, picker.RoundRobin, picker.ShuffledPin} {
			k := runKey{name, p, 1, false}
			t.Run(name+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				first := result(t, k)
				again, err := simulate(k)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(first, again) {
					t.Errorf("%v: two runs differ:\n%+v\n%+v", k, first, again)
				}
			})
		}
	}
}

// TestOutage: requests to a removed member fail fast, and p2c-ewma fails
// no more of them than round robin.
func TestOutage(t *testing.T) {
	t.Parallel()
	p2c := result(t, runKey{"outage", picker.P2CEWMA, 1, false})
	rr := result(t, runKey{"outage", picker.RoundRobin, 1, false})
	t.Logf("failed: p2c-ewma %d, round-robin %d", p2c.FailedErrors, rr.FailedErrors)
	if p2c.FailedErrors == 0 || p2c.DeadlineErrors != 0 {
		t.Errorf("p2c-ewma: %d failed, %d timed out; want some failed and none timed out", p2c.FailedErrors, p2c.DeadlineErrors)
	}
	if p2c.FailedErrors > rr.FailedErrors {
		t.Errorf("p2c-ewma failed %d requests, round-robin only %d", p2c.FailedErrors, rr.FailedErrors)
	}
}
