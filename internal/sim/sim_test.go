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
	// For scenarios with a Mix: how requests reach the engine.
	est    Estimates
	leader LeaderRule
	hedge  bool // Options.Hedge with its defaults
}

func (k runKey) String() string {
	s := fmt.Sprintf("%s/%s/seed=%d", k.scenario, k.policy, k.seed)
	if k.noEject {
		s += "/no-eject"
	}
	if k.est != PerClass || k.leader != Reserve {
		s += fmt.Sprintf("/%s/%s", k.est, k.leader)
	}
	if k.hedge {
		s += "/hedged"
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
	opt := Options{Scenario: sc, Policy: k.policy, Seed: k.seed, Estimates: k.est, Leader: k.leader}
	if k.noEject {
		opt.Engine.EjectAfter = -1
	}
	if k.hedge {
		opt.Hedge = &Hedge{}
	}
	return Run(opt)
}

// result returns the (shared) result of run k and checks the bookkeeping
// that must hold for every run.
// warm runs k's simulation, for result to read: runs started from several
// goroutines go in parallel.
func warm(k runKey) {
	v, _ := runs.LoadOrStore(k, new(runEntry))
	e := v.(*runEntry)
	e.once.Do(func() { e.res, e.err = simulate(k) })
}

func result(t *testing.T, k runKey) Result {
	t.Helper()
	warm(k)
	v, _ := runs.Load(k)
	e := v.(*runEntry)
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
			r := result(t, runKey{scenario: "homogeneous", policy: l.policy, seed: seed})
			t.Logf("%-18s max/mean %.4f shares %v p99 %.1f ms util %.3f", l.policy, r.MaxOverMeanShare, r.MemberShare, r.Latency.P99, r.Utilization)
			if r.MaxOverMeanShare > l.maxOverMean {
				t.Errorf("%s: max/mean share %.4f > %.2f (shares %v)", l.policy, r.MaxOverMeanShare, l.maxOverMean, r.MemberShare)
			}
			if r.Errors != 0 {
				t.Errorf("%s: %d errors on a healthy cluster", l.policy, r.Errors)
			}
		}
		// The think time is derived so that the cluster runs at about 60%.
		if u := result(t, runKey{scenario: "homogeneous", policy: picker.RoundRobin, seed: seed}).Utilization; u < 0.57 || u > 0.63 {
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
		p2c := result(t, runKey{scenario: "slow-member", policy: picker.P2CEWMA, seed: seed})
		rr := result(t, runKey{scenario: "slow-member", policy: picker.RoundRobin, seed: seed, noEject: true})
		rrEject := result(t, runKey{scenario: "slow-member", policy: picker.RoundRobin, seed: seed})
		hom := result(t, runKey{scenario: "homogeneous", policy: picker.P2CEWMA, seed: seed})
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
		p2c := result(t, runKey{scenario: "blackhole", policy: picker.P2CEWMA, seed: seed})
		rr := result(t, runKey{scenario: "blackhole", policy: picker.RoundRobin, seed: seed})
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
		r := result(t, runKey{scenario: "recovery", policy: picker.P2CEWMA, seed: seed})
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
		p2c := result(t, runKey{scenario: "incident", policy: picker.P2CEWMA, seed: seed})
		pin := result(t, runKey{scenario: "incident", policy: picker.Pinned, seed: seed})
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
		for _, p := range picker.Policies() {
			t.Run(sc.Name+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				result(t, runKey{scenario: sc.Name, policy: p, seed: 1})
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
			k := runKey{scenario: name, policy: p, seed: 1}
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
	p2c := result(t, runKey{scenario: "outage", policy: picker.P2CEWMA, seed: 1})
	rr := result(t, runKey{scenario: "outage", policy: picker.RoundRobin, seed: 1})
	t.Logf("failed: p2c-ewma %d, round-robin %d", p2c.FailedErrors, rr.FailedErrors)
	if p2c.FailedErrors == 0 || p2c.DeadlineErrors != 0 {
		t.Errorf("p2c-ewma: %d failed, %d timed out; want some failed and none timed out", p2c.FailedErrors, p2c.DeadlineErrors)
	}
	if p2c.FailedErrors > rr.FailedErrors {
		t.Errorf("p2c-ewma failed %d requests, round-robin only %d", p2c.FailedErrors, rr.FailedErrors)
	}
}

// mixKey is a p2c-ewma run of a scenario with a Mix.
func mixKey(scenario string, seed uint64, est Estimates, lr LeaderRule) runKey {
	return runKey{scenario: scenario, policy: picker.P2CEWMA, seed: seed, est: est, leader: lr}
}

// TestLeaderRule checks the reserve rule (picker.Request.Reserve) on a
// leader whose service time grows with its writes: while the followers are
// healthy (lists) the leader takes far less than its fair share of reads;
// when they are all slower (slow-followers) or saturated (saturated) it
// takes reads, and the tail is better than when reads avoid the leader
// outright (Request.Avoid: only when no follower is eligible).
func TestLeaderRule(t *testing.T) {
	t.Parallel()
	forSeeds(t, func(t *testing.T, seed uint64) {
		healthy := result(t, mixKey("lists", seed, PerClass, Reserve)).Mix
		t.Logf("lists: leader read share %.4f (fair %.3f), follower max/mean %.3f", healthy.LeaderReadShare, healthy.FairShare, healthy.FollowerMaxOverMean)
		if healthy.LeaderReadShare > healthy.FairShare/4 {
			t.Errorf("lists: the leader took %.4f of reads with healthy followers, want ≤ a quarter of its fair share %.3f",
				healthy.LeaderReadShare, healthy.FairShare)
		}
		for _, name := range []string{"slow-followers", "saturated"} {
			res := result(t, mixKey(name, seed, PerClass, Reserve))
			old := result(t, mixKey(name, seed, PerClass, Avoid))
			t.Logf("%s: reserve: leader reads %.4f, p99 %.1f ms (point %.1f); avoid: leader reads %.4f, p99 %.1f ms (point %.1f)",
				name, res.Mix.LeaderReadShare, res.Latency.P99, res.Mix.Point.P99, old.Mix.LeaderReadShare, old.Latency.P99, old.Mix.Point.P99)
			if res.Mix.LeaderReadShare < res.Mix.FairShare/8 {
				t.Errorf("%s: the leader took %.4f of reads, want ≥ %.3f: the followers are slower", name, res.Mix.LeaderReadShare, res.Mix.FairShare/8)
			}
			if res.Latency.P99 >= old.Latency.P99 || res.Errors > old.Errors {
				t.Errorf("%s: reserve p99 %.1f ms (%d errors), no better than avoid's %.1f ms (%d errors)",
					name, res.Latency.P99, res.Errors, old.Latency.P99, old.Errors)
			}
		}
	})
}

// TestPerClassEstimates: under a List-heavy mix, point reads judged by
// their own estimate have a better tail than with one estimate shared with
// the Lists, on every seed. The p99 of all requests is about the median
// List, which both estimates route alike (one seed in five swings either
// way by 10%), so it is held to no worse on average over the seeds.
// Size-normalised samples (the alternative) are logged beside.
func TestPerClassEstimates(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	for _, seed := range seeds {
		for _, est := range []Estimates{PerClass, Shared, Normalized} {
			wg.Add(1)
			go func(k runKey) { defer wg.Done(); warm(k) }(mixKey("lists", seed, est, Reserve))
		}
	}
	wg.Wait()
	var pcSum, shSum float64
	for _, seed := range seeds {
		pc := result(t, mixKey("lists", seed, PerClass, Reserve))
		sh := result(t, mixKey("lists", seed, Shared, Reserve))
		nz := result(t, mixKey("lists", seed, Normalized, Reserve))
		for _, r := range []struct {
			name string
			res  Result
		}{{"per-class", pc}, {"shared", sh}, {"normalized", nz}} {
			t.Logf("seed %d: %-10s p99 %.1f ms, point p99 %.1f ms, range p99 %.1f ms, leader reads %.4f",
				seed, r.name, r.res.Latency.P99, r.res.Mix.Point.P99, r.res.Mix.Range.P99, r.res.Mix.LeaderReadShare)
		}
		if pc.Mix.Point.P99 > 0.95*sh.Mix.Point.P99 {
			t.Errorf("seed %d: point-read p99 %.1f ms per class, want ≤ 0.95 × %.1f ms with a shared estimate", seed, pc.Mix.Point.P99, sh.Mix.Point.P99)
		}
		pcSum += pc.Latency.P99
		shSum += sh.Latency.P99
	}
	n := float64(len(seeds))
	if pcSum > shSum {
		t.Errorf("mean p99 over %d seeds %.1f ms per class, above %.1f ms with a shared estimate", len(seeds), pcSum/n, shSum/n)
	}
}
