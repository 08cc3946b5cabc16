package picker

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const ms = time.Millisecond

func TestPickEmptyAndBadInput(t *testing.T) {
	p := mustNew(t, Config{})
	if _, err := p.Pick(Request{}); err != ErrNoEndpoints {
		t.Fatalf("Pick on empty set = %v, want ErrNoEndpoints", err)
	}
	p.Done(Ticket{}, Outcome{}) // the zero ticket is ignored
	for _, bad := range []string{"", " a", "a b", "a\n"} {
		err := p.SetEndpoints([]string{"ok", bad})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("SetEndpoints(%q) = %v, want an error naming it", bad, err)
		}
	}
	many := make([]string, MaxEndpoints+1)
	for i := range many {
		many[i] = fmt.Sprint("m", i)
	}
	if err := p.SetEndpoints(many); err == nil || !strings.Contains(err.Error(), "65") {
		t.Errorf("too many endpoints: %v", err)
	}
	if err := p.SetEndpoints([]string{"a", "a", "b"}); err != nil || len(p.Endpoints()) != 2 {
		t.Errorf("duplicates must be dropped: %v %v", err, p.Endpoints())
	}
	if _, err := p.PickAddr("zz", Unary); err == nil || !strings.Contains(err.Error(), `"zz"`) {
		t.Errorf("PickAddr(unknown) = %v", err)
	}
	if err := p.UpdateTags("zz", 1, 0); err == nil {
		t.Error("SetTags(unknown) succeeded")
	}
	if _, err := p.Pick(Request{Exclude: 1}); err != nil {
		t.Errorf("untagged endpoints must stay eligible: %v", err)
	}
	p.UpdateTags("a", 1, 0)
	p.UpdateTags("b", 1, 0)
	if _, err := p.Pick(Request{Exclude: 1}); err != ErrNoEligible {
		t.Errorf("all excluded: %v, want ErrNoEligible", err)
	}
}

func TestPairsAreDistinctAndUniform(t *testing.T) {
	src := NewSource(1)
	const n = 5
	mask := uint64(1<<n - 1)
	counts := make([]int, n*n)
	draws := 600 * n * (n - 1)
	for i := 0; i < draws; i++ {
		a, b := pair(mask, src.Uint64())
		if a == b {
			t.Fatalf("pair drew %d twice", a)
		}
		counts[a*n+b]++
	}
	var ordered []int
	for a := 0; a < n; a++ {
		for b := 0; b < n; b++ {
			if a != b {
				ordered = append(ordered, counts[a*n+b])
			}
		}
	}
	x := chiSquare(ordered, float64(draws)/float64(len(ordered)))
	if crit := chiSquareCritical(len(ordered)-1, z1e6); x > crit {
		t.Fatalf("pair distribution χ²=%.1f > %.1f: %v", x, crit, ordered)
	}
	// A sparse mask draws only its members.
	for i := 0; i < 1000; i++ {
		a, b := pair(0x22, src.Uint64())
		if !(a == 1 && b == 5 || a == 5 && b == 1) {
			t.Fatalf("pair(0x22) = %d,%d", a, b)
		}
	}
}

func TestTieBreakIsRandom(t *testing.T) {
	// Unmeasured endpoints with nothing in flight all cost the same, so
	// every pick is a tie: the winner must be uniform, not the lower index.
	p := mustNew(t, Config{Clock: newFakeClock(), Rand: NewSource(2)}, five...)
	counts := map[string]int{}
	const draws = 5 * 1000
	for i := 0; i < draws; i++ {
		tk, err := p.Pick(Request{})
		if err != nil {
			t.Fatal(err)
		}
		counts[tk.Addr()]++
		p.Done(tk, Outcome{Result: Canceled})
	}
	var c []int
	for _, a := range five {
		c = append(c, counts[a])
	}
	if x, crit := chiSquare(c, draws/5), chiSquareCritical(4, z1e6); x > crit {
		t.Fatalf("tie-break χ²=%.1f > %.1f: %v", x, crit, counts)
	}
}

func TestPeakEWMA(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(3), IdleDecay: -1, PeakStep: -1}, "a")
	run := func(d time.Duration) {
		tk, _ := p.PickAddr("a", Unary)
		clk.Advance(d)
		p.Done(tk, Outcome{})
	}
	run(10 * ms)
	if got := statsOf(t, p, "a").Estimate; got != 10*ms {
		t.Fatalf("first sample: estimate %v, want 10ms", got)
	}
	// A sample given with the outcome wins over the time since Pick.
	tk, _ := p.PickAddr("a", Unary)
	clk.Advance(50 * ms)
	p.Done(tk, Outcome{Latency: 4 * ms})
	if got := statsOf(t, p, "a").Estimate; got >= 10*ms {
		t.Fatalf("Outcome.Latency ignored: estimate %v", got)
	}
	run(100 * ms)
	if got := statsOf(t, p, "a").Estimate; got != 100*ms {
		t.Fatalf("a peak replaces the estimate at once: %v", got)
	}
	clk.Advance(defaultDecay - 10*ms)
	run(10 * ms) // Δt = τ: w = 1/e
	want := 100*math.Exp(-1) + 10*(1-math.Exp(-1))
	got := float64(statsOf(t, p, "a").Estimate) / float64(ms)
	if math.Abs(got-want) > 0.01 {
		t.Fatalf("decay over τ: %.3fms, want %.3fms", got, want)
	}
	// Reading does not change the estimate.
	bits := p.load().eps[0].est[0].estBits
	for i := 0; i < 10; i++ {
		clk.Advance(time.Second)
		p.Snapshot()
	}
	if p.load().eps[0].est[0].estBits != bits {
		t.Fatal("reading the estimate changed it")
	}
}

// measure gives each endpoint a latency sample.
func measure(p *Picker, clk *fakeClock, lat map[string]time.Duration) {
	for a, d := range lat {
		tk, _ := p.PickAddr(a, Unary)
		clk.Advance(d)
		p.Done(tk, Outcome{})
	}
}

func TestIdleDecayTowardMedian(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(4)}, "a", "b", "c")
	measure(p, clk, map[string]time.Duration{"a": 10 * ms, "b": 10 * ms})
	measure(p, clk, map[string]time.Duration{"c": 110 * ms})
	clk.Advance(time.Duration(medianRefresh))
	measure(p, clk, map[string]time.Duration{"a": 10 * ms, "b": 10 * ms})
	if e := statsOf(t, p, "c").Estimate; e < 109*ms {
		t.Fatalf("within the grace the estimate holds: %v", e)
	}
	clk.Advance(defaultIdleGrace + defaultIdleDecay)
	measure(p, clk, map[string]time.Duration{"a": 10 * ms, "b": 10 * ms}) // keep the median fresh
	got := float64(statsOf(t, p, "c").Estimate) / float64(ms)
	// ≈ 10 + 100/e after one idle time constant (a little more has passed).
	if got > 10+100*math.Exp(-1)+0.5 || got < 10+100*math.Exp(-1.2) {
		t.Fatalf("after one idle time constant: %.2fms", got)
	}
	clk.Advance(60 * time.Second)
	if got := statsOf(t, p, "c").Estimate; got > 11*ms {
		t.Fatalf("long idle: estimate %v, want ≈ median 10ms", got)
	}
	// With idle decay off, a slow endpoint stays slow.
	p2 := mustNew(t, Config{Clock: clk, Rand: NewSource(4), IdleDecay: -1}, "a", "b", "c")
	measure(p2, clk, map[string]time.Duration{"a": 10 * ms, "b": 10 * ms, "c": 110 * ms})
	clk.Advance(time.Minute)
	if got := statsOf(t, p2, "c").Estimate; got != 110*ms {
		t.Fatalf("idle decay off: %v", got)
	}
}

func TestStallCharge(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(5)}, five...)
	for i := 0; i < 3; i++ {
		measure(p, clk, map[string]time.Duration{"a": 10 * ms, "b": 10 * ms, "c": 10 * ms, "d": 10 * ms, "e": 10 * ms})
	}
	stuck, _ := p.PickAddr("a", Unary) // black-holed: never completes
	clk.Advance(5 * ms)
	if e := statsOf(t, p, "a").Estimate; e != 10*ms {
		t.Fatalf("before the estimate passes, no stall charge: %v", e)
	}
	clk.Advance(45 * ms)
	if e := statsOf(t, p, "a").Estimate; e != 50*ms {
		t.Fatalf("stalled for 50ms: estimate %v, want 50ms", e)
	}
	// New picks avoid the stalled endpoint although nothing has failed.
	for i := 0; i < 1000; i++ {
		tk, _ := p.Pick(Request{})
		if tk.Addr() == "a" {
			t.Fatalf("pick %d went to the stalled endpoint", i)
		}
		clk.Advance(ms)
		p.Done(tk, Outcome{})
	}
	p.Done(stuck, Outcome{Result: DeadlineExceeded, Timeout: time.Second})
	if e := statsOf(t, p, "a").Estimate; e < time.Second {
		t.Fatalf("a deadline is charged as the full deadline: %v", e)
	}
}

// TestStallSurvivesCancels: requests canceled unanswered (hedge losers on
// a member in a pause) are not progress. The stall clock keeps running
// while others are in flight, and with none in flight until IdleGrace
// after the last cancel, so that the next first attempt sees the stall;
// after a longer gap, or once the member answers, it starts afresh.
func TestStallSurvivesCancels(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(5), IdleGrace: 250 * ms}, five...)
	for i := 0; i < 3; i++ {
		measure(p, clk, map[string]time.Duration{"a": 10 * ms, "b": 10 * ms, "c": 10 * ms, "d": 10 * ms, "e": 10 * ms})
	}
	first, _ := p.PickAddr("a", Unary)
	clk.Advance(30 * ms)
	second, _ := p.PickAddr("a", Unary)
	clk.Advance(20 * ms)
	p.Done(first, Outcome{Result: Canceled}) // the copy won elsewhere
	if e := statsOf(t, p, "a").Estimate; e != 50*ms {
		t.Fatalf("a cancel is not progress: estimate %v, want the 50ms stall", e)
	}
	p.Done(second, Outcome{Result: Canceled})
	clk.Advance(10 * ms)
	if e := statsOf(t, p, "a").Estimate; e != 60*ms {
		t.Fatalf("nothing in flight, 10ms after the last cancel: estimate %v, want the 60ms stall", e)
	}
	third, _ := p.PickAddr("a", Unary)
	clk.Advance(ms)
	if e := statsOf(t, p, "a").Estimate; e != 61*ms {
		t.Fatalf("10ms after the last cancel, a new request: estimate %v, want the 61ms stall", e)
	}
	p.Done(third, Outcome{Result: Canceled})
	clk.Advance(300 * ms) // longer than IdleGrace: idle, not stalled
	fourth, _ := p.PickAddr("a", Unary)
	clk.Advance(ms)
	if e := statsOf(t, p, "a").Estimate; e > 10*ms {
		t.Fatalf("after an idle gap the stall clock starts afresh: estimate %v", e)
	}
	p.Done(fourth, Outcome{Latency: 10 * ms})
	fifth, _ := p.PickAddr("a", Unary)
	clk.Advance(ms)
	if e := statsOf(t, p, "a").Estimate; e > 10*ms {
		t.Fatalf("after an answer the stall clock starts afresh: estimate %v", e)
	}
	p.Done(fifth, Outcome{Result: Canceled})
}

func TestFailureCharges(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(6), EjectAfter: -1}, "a", "b")
	measure(p, clk, map[string]time.Duration{"a": 10 * ms, "b": 10 * ms})
	tk, _ := p.PickAddr("a", Unary)
	clk.Advance(ms)
	p.Done(tk, Outcome{Result: Failed})
	s := statsOf(t, p, "a")
	if s.Estimate != defaultFailurePenalty || s.Failures != 1 || s.ConsecutiveFailures != 1 {
		t.Fatalf("a fast failure must not look fast: %+v", s)
	}
	tk, _ = p.PickAddr("a", Unary)
	clk.Advance(ms)
	p.Done(tk, Outcome{Result: Canceled})
	if s := statsOf(t, p, "a"); s.Failures != 1 || s.Estimate != defaultFailurePenalty {
		t.Fatalf("cancel is neither a sample nor a failure: %+v", s)
	}
	tk, _ = p.PickAddr("a", Unary)
	p.Done(tk, Outcome{})
	if s := statsOf(t, p, "a"); s.ConsecutiveFailures != 0 || s.Failures != 1 {
		t.Fatalf("success resets the streak: %+v", s)
	}
}

func TestEjectionProbeAndBackoff(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(7)}, "a", "b", "c")
	failA := func() {
		tk, _ := p.PickAddr("a", Unary)
		p.Done(tk, Outcome{Result: Failed})
	}
	for i := 0; i < defaultEjectAfter-1; i++ {
		failA()
	}
	if statsOf(t, p, "a").Ejected {
		t.Fatal("ejected too early")
	}
	failA()
	s := statsOf(t, p, "a")
	if !s.Ejected || s.EjectedUntil.Sub(clk.Now()) != defaultEjectBase {
		t.Fatalf("after %d failures: %+v", defaultEjectAfter, s)
	}
	pickN := func(n int) map[string]int {
		got := map[string]int{}
		var tks []Ticket
		for i := 0; i < n; i++ {
			tk, err := p.Pick(Request{})
			if err != nil {
				t.Fatal(err)
			}
			got[tk.Addr()]++
			if tk.probe {
				got["probe"]++
			}
			tks = append(tks, tk)
		}
		for _, tk := range tks {
			if !tk.probe {
				p.Done(tk, Outcome{})
			}
		}
		return got
	}
	if got := pickN(300); got["a"] != 0 {
		t.Fatalf("ejected endpoint picked: %v", got)
	}
	clk.Advance(defaultEjectBase)
	// Exactly one probe goes out; while it is out, nothing else goes there.
	probe, err := p.Pick(Request{})
	if err != nil || probe.Addr() != "a" || !probe.probe {
		t.Fatalf("first pick after the ejection ends = %q probe=%v, %v", probe.Addr(), probe.probe, err)
	}
	if got := pickN(300); got["a"] != 0 || got["probe"] != 0 {
		t.Fatalf("second probe or traffic while probing: %v", got)
	}
	p.Done(probe, Outcome{Result: Failed})
	s = statsOf(t, p, "a")
	if !s.Ejected || s.EjectedUntil.Sub(clk.Now()) != 2*defaultEjectBase {
		t.Fatalf("failed probe must double the ejection: %+v", s)
	}
	clk.Advance(2 * defaultEjectBase)
	probe, _ = p.Pick(Request{})
	if !probe.probe {
		t.Fatal("no probe after the second ejection")
	}
	p.Done(probe, Outcome{})
	if s := statsOf(t, p, "a"); s.Ejected {
		t.Fatalf("a good probe must return the endpoint: %+v", s)
	}
	// With realistic latencies it wins its share back as the failure
	// charges decay.
	got := map[string]int{}
	noise := NewSource(70)
	for i := 0; i < 6000; i++ {
		tk, _ := p.Pick(Request{})
		clk.Advance(8*ms + time.Duration(noise.Uint64()%uint64(4*ms)))
		p.Done(tk, Outcome{})
		if i >= 5000 {
			got[tk.Addr()]++
		}
	}
	if got["a"] < 200 {
		t.Fatalf("returned endpoint's share a minute later: %v", got)
	}
}

func TestNeverEjectsEveryEndpoint(t *testing.T) {
	for _, pol := range Policies() {
		clk := newFakeClock()
		p := mustNew(t, Config{Policy: pol, Clock: clk, Rand: NewSource(8)}, "a", "b")
		for i := 0; i < 50; i++ {
			for _, a := range []string{"a", "b"} {
				tk, _ := p.PickAddr(a, Unary)
				p.Done(tk, Outcome{Result: Failed})
			}
		}
		ejected := 0
		for _, s := range p.Snapshot() {
			if s.Ejected {
				ejected++
			}
		}
		if ejected != 1 {
			t.Fatalf("%s: %d of 2 ejected, want exactly 1", pol, ejected)
		}
		for i := 0; i < 10; i++ {
			tk, err := p.Pick(Request{})
			if err != nil {
				t.Fatalf("%s: %v", pol, err)
			}
			p.Done(tk, Outcome{Result: Canceled})
		}
	}
}

func TestReshuffle(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Policy: ShuffledPin, Clock: clk, Rand: NewSource(9)}, five...)
	pinned := func() string {
		tk, _ := p.Pick(Request{})
		p.Done(tk, Outcome{})
		return tk.Addr()
	}
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		first := pinned()
		for j := 0; j < 20; j++ {
			clk.Advance(100 * ms) // 2s, well inside the interval
			if got := pinned(); got != first {
				t.Fatalf("pin moved without a reshuffle: %s → %s", first, got)
			}
		}
		seen[first] = true
		clk.Advance(defaultReshuffleInterval * 13 / 10) // past the interval plus jitter
	}
	if len(seen) != len(five) {
		t.Fatalf("50 reshuffles pinned only %v", seen)
	}

	// Switched off, and for the pinned policy: the order never changes.
	for _, cfg := range []Config{{Policy: RoundRobin, ReshuffleInterval: -1}, {Policy: Pinned}} {
		cfg.Clock, cfg.Rand = clk, NewSource(10)
		p := mustNew(t, cfg, five...)
		order := strings.Join(p.Endpoints(), ",")
		for i := 0; i < 20; i++ {
			clk.Advance(time.Minute)
			tk, _ := p.Pick(Request{})
			p.Done(tk, Outcome{})
			if got := strings.Join(p.Endpoints(), ","); got != order {
				t.Fatalf("%s: order changed %s → %s", cfg.Policy, order, got)
			}
		}
	}
}

func TestPinnedMovesOnFailureOnly(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Policy: Pinned, Clock: clk, Rand: NewSource(11)}, five...)
	tk, _ := p.Pick(Request{})
	first := tk.Addr()
	p.Done(tk, Outcome{})
	for i := 0; i < 100; i++ {
		tk, _ := p.Pick(Request{})
		if tk.Addr() != first {
			t.Fatalf("pinned moved without a failure")
		}
		p.Done(tk, Outcome{})
	}
	tk, _ = p.Pick(Request{})
	p.Done(tk, Outcome{Result: Failed})
	tk, _ = p.Pick(Request{})
	if tk.Addr() == first {
		t.Fatal("pinned stayed after a failure")
	}
}

func TestRoundRobinIsEven(t *testing.T) {
	p := mustNew(t, Config{Policy: RoundRobin, Clock: newFakeClock(), Rand: NewSource(12)}, five...)
	got := map[string]int{}
	for i := 0; i < 500; i++ {
		tk, _ := p.Pick(Request{})
		got[tk.Addr()]++
		p.Done(tk, Outcome{})
	}
	for _, a := range five {
		if got[a] != 100 {
			t.Fatalf("round robin: %v", got)
		}
	}
}

func TestLeastOutstanding(t *testing.T) {
	p := mustNew(t, Config{Policy: LeastOutstanding, Clock: newFakeClock(), Rand: NewSource(13)}, "a", "b", "c")
	var held []Ticket
	for i := 0; i < 30; i++ {
		tk, _ := p.Pick(Request{})
		held = append(held, tk)
	}
	for _, s := range p.Snapshot() {
		if s.InFlight != 10 {
			t.Fatalf("least-outstanding with nothing completing: %+v", p.Snapshot())
		}
	}
	for _, tk := range held {
		p.Done(tk, Outcome{})
	}
}

func TestStreamsSpreadByTheirOwnCount(t *testing.T) {
	for _, pol := range []Policy{P2CEWMA, LeastOutstanding, RoundRobin} {
		p := mustNew(t, Config{Policy: pol, Clock: newFakeClock(), Rand: NewSource(14)}, "a", "b", "c")
		var held []Ticket
		for i := 0; i < 30; i++ {
			tk, _ := p.Pick(Request{Kind: Stream})
			if tk.Kind() != Stream {
				t.Fatal("ticket kind lost")
			}
			held = append(held, tk)
		}
		for _, s := range p.Snapshot() {
			if s.Streams != 10 || s.InFlight != 0 || s.Measured {
				t.Fatalf("%s: 30 streams over 3: %+v", pol, s)
			}
		}
		for _, tk := range held {
			p.Done(tk, Outcome{})
		}
		for _, s := range p.Snapshot() {
			if s.Streams != 0 || s.Measured {
				t.Fatalf("%s: closed streams: %+v", pol, s)
			}
		}
	}
}

func TestTags(t *testing.T) {
	const leader, learner Tags = 1, 2
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(15)}, "a", "b", "c", "d")
	p.UpdateTags("a", leader, ^leader)
	p.UpdateTags("d", learner, ^learner)
	count := func(r Request) map[string]int {
		got := map[string]int{}
		for i := 0; i < 400; i++ {
			tk, err := p.Pick(r)
			if err != nil {
				t.Fatal(err)
			}
			got[tk.Addr()]++
			clk.Advance(ms)
			p.Done(tk, Outcome{})
		}
		return got
	}
	if got := count(Request{Prefer: leader, Exclude: learner}); got["a"] != 400 {
		t.Fatalf("prefer leader: %v", got)
	}
	if got := count(Request{Exclude: learner}); got["d"] != 0 {
		t.Fatalf("exclude learner: %v", got)
	}
	if got := count(Request{Avoid: leader}); got["a"] != 0 || got["b"] == 0 || got["c"] == 0 || got["d"] == 0 {
		t.Fatalf("avoid leader while others are as cheap: %v", got)
	}
	if err := p.UpdateTags("a", learner, 0); err != nil {
		t.Fatal(err)
	}
	if got := count(Request{Prefer: leader, Exclude: learner}); got["a"] != 0 || got["d"] != 0 {
		t.Fatalf("UpdateTags must add a bit and keep the others: %v", got)
	}
	p.UpdateTags("a", 0, leader|learner)
	if err := p.UpdateTags("zz", 1, 0); err == nil {
		t.Error("UpdateTags(unknown) succeeded")
	}
	if got := count(Request{Prefer: leader}); got["a"] == 400 {
		t.Fatalf("prefer with no tagged endpoint must fall back to all: %v", got)
	}
}

func TestSetEndpointsKeepsStats(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(16)}, "a", "b")
	measure(p, clk, map[string]time.Duration{"a": 7 * ms, "b": 9 * ms})
	if err := p.SetEndpoints([]string{"b", "c"}); err != nil {
		t.Fatal(err)
	}
	got := p.Endpoints()
	sort.Strings(got)
	if strings.Join(got, ",") != "b,c" {
		t.Fatalf("set = %v", got)
	}
	if s := statsOf(t, p, "b"); s.Estimate != 9*ms || s.Picks != 1 {
		t.Fatalf("b lost its stats: %+v", s)
	}
	if s := statsOf(t, p, "c"); s.Measured || s.Estimate != 9*ms {
		t.Fatalf("c must start unmeasured at the median: %+v", s)
	}
	// c is in slow start: it costs more than b although it has the same rtt.
	if sb, sc := statsOf(t, p, "b"), statsOf(t, p, "c"); !(sc.Cost > sb.Cost) {
		t.Fatalf("no slow start: b %.0f c %.0f", sb.Cost, sc.Cost)
	}
}

func TestConcurrentSetUpdates(t *testing.T) {
	p := mustNew(t, Config{Rand: NewSource(17), ReshuffleInterval: time.Millisecond}, five...)
	sets := [][]string{five, {"a", "b"}, {"c", "d", "e", "f"}, {"a"}, {}}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tk, err := p.Pick(Request{Kind: Kind(i % 2)})
				if err == ErrNoEndpoints {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				p.Done(tk, Outcome{Result: Result(i % 4)})
			}
		}(g)
	}
	for i := 0; i < 2000; i++ {
		if err := p.SetEndpoints(sets[i%len(sets)]); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			p.Snapshot()
			p.UpdateTags("a", Tags(i), ^Tags(i))
		}
	}
	close(stop)
	wg.Wait()
	p.SetEndpoints(five)
	for _, s := range p.Snapshot() {
		if s.InFlight != 0 || s.Streams != 0 {
			t.Fatalf("counts leaked across set updates: %+v", s)
		}
	}
}

func TestFirstSampleRefreshesTheMedian(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(18)}, "a", "b", "c")
	p.Snapshot() // computes the median while nothing is measured
	measure(p, clk, map[string]time.Duration{"a": 2 * ms})
	if e := statsOf(t, p, "b").Estimate; e != 2*ms {
		t.Fatalf("unmeasured endpoint right after the first sample: %v, want the new median 2ms", e)
	}
}

func TestMinSampleWeight(t *testing.T) {
	// Under heavy traffic one slow answer is outweighed by the fast ones
	// after it; with the floor off it lingers for about τ.
	for _, tc := range []struct {
		msw     float64
		settled bool
	}{{0, true}, {-1, false}} {
		clk := newFakeClock()
		p := mustNew(t, Config{Clock: clk, Rand: NewSource(19), MinSampleWeight: tc.msw}, "a")
		measure(p, clk, map[string]time.Duration{"a": ms})
		measure(p, clk, map[string]time.Duration{"a": 100 * ms})
		for i := 0; i < 200; i++ {
			measure(p, clk, map[string]time.Duration{"a": ms})
		}
		e := statsOf(t, p, "a").Estimate
		if settled := e < 2*ms; settled != tc.settled {
			t.Errorf("MinSampleWeight %v: estimate %v after 200 fast answers in 0.3s", tc.msw, e)
		}
	}
}

func TestPeakStep(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(20)}, "a")
	measure(p, clk, map[string]time.Duration{"a": 10 * ms})
	measure(p, clk, map[string]time.Duration{"a": time.Second})
	if e := statsOf(t, p, "a").Estimate; e != 40*ms {
		t.Fatalf("one slow answer: estimate %v, want 4 × 10ms", e)
	}
	for i := 0; i < 3; i++ { // 160ms, 640ms, then the sample itself
		measure(p, clk, map[string]time.Duration{"a": time.Second})
	}
	if e := statsOf(t, p, "a").Estimate; e != time.Second {
		t.Fatalf("four slow answers: estimate %v, want 1s", e)
	}
	// Failures are charged in full.
	q := mustNew(t, Config{Clock: clk, Rand: NewSource(21), EjectAfter: -1}, "a")
	measure(q, clk, map[string]time.Duration{"a": 10 * ms})
	tk, _ := q.PickAddr("a", Unary)
	q.Done(tk, Outcome{Result: DeadlineExceeded, Timeout: time.Second})
	if e := statsOf(t, q, "a").Estimate; e != time.Second {
		t.Fatalf("deadline after a 10ms answer: estimate %v, want the full 1s", e)
	}
}

func TestStreamsAvoidAMemberThatJustFailed(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(22)}, "a", "b", "c")
	tk, _ := p.PickAddr("a", Stream)
	p.Done(tk, Outcome{Result: Failed}) // a cut its stream off
	var held []Ticket
	for i := 0; i < 20; i++ {
		tk, _ := p.Pick(Request{Kind: Stream})
		if tk.Addr() == "a" {
			t.Fatalf("stream %d sent back to the member that just failed", i)
		}
		held = append(held, tk)
	}
	tk, _ = p.PickAddr("a", Unary)
	p.Done(tk, Outcome{}) // a answers again
	tk, _ = p.Pick(Request{Kind: Stream})
	if tk.Addr() != "a" {
		t.Fatalf("recovered member with no streams not chosen: %s", tk.Addr())
	}
	held = append(held, tk)
	// A client that only opens streams returns to the member once the
	// failure is old, although no success has cleared it.
	tk, _ = p.PickAddr("b", Stream)
	p.Done(tk, Outcome{Result: Failed})
	tk, _ = p.Pick(Request{Kind: Stream})
	if tk.Addr() == "b" {
		t.Fatal("b just failed")
	}
	held = append(held, tk)
	clk.Advance(defaultEjectBase)
	for i := 0; i < 30; i++ {
		tk, _ = p.Pick(Request{Kind: Stream})
		held = append(held, tk)
	}
	if s := statsOf(t, p, "b"); s.Streams < 9 {
		t.Fatalf("b got %d streams after its failure aged, want its share", s.Streams)
	}
	for _, h := range held {
		p.Done(h, Outcome{})
	}
}

// TestAvoidUnlessNothingElse: an avoided endpoint serves only when no other
// is eligible, however much dearer the others are, and Avoid applies
// before Prefer.
func TestAvoidUnlessNothingElse(t *testing.T) {
	const leader, stale, learner Tags = 1, 2, 4
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(31)}, "a", "b", "c")
	require.NoError(t, p.UpdateTags("a", leader|stale, 0))
	count := func(r Request) map[string]int {
		got := map[string]int{}
		for i := 0; i < 300; i++ {
			tk, err := p.Pick(r)
			require.NoError(t, err)
			got[tk.Addr()]++
			clk.Advance(ms)
			p.Done(tk, Outcome{})
		}
		return got
	}
	// The others are 100× dearer: the avoided one still gets nothing.
	measure(p, clk, map[string]time.Duration{"a": ms, "b": 100 * ms, "c": 100 * ms})
	got := count(Request{Avoid: stale})
	assert.Zero(t, got["a"], "avoided endpoint picked while others were eligible: %v", got)
	// Preferred but avoided: the preference is dropped, not the avoidance.
	got = count(Request{Prefer: leader, Avoid: stale})
	assert.Zero(t, got["a"], "prefer must not override avoid: %v", got)
	// Nothing else eligible: it serves.
	require.NoError(t, p.UpdateTags("b", learner, 0))
	require.NoError(t, p.UpdateTags("c", learner, 0))
	got = count(Request{Avoid: stale, Exclude: learner})
	assert.Equal(t, 300, got["a"], "the only eligible endpoint must serve although avoided: %v", got)
	// Every endpoint avoided: all serve.
	got = count(Request{Avoid: stale | learner})
	assert.NotZero(t, got["b"]+got["c"], "all avoided, all must be eligible: %v", got)
}

// TestSkip: listed addresses are never picked; skipping all of them is
// ErrNoEligible; unknown addresses are ignored.
func TestSkip(t *testing.T) {
	clk := newFakeClock()
	for _, pol := range Policies() {
		p := mustNew(t, Config{Policy: pol, Clock: clk, Rand: NewSource(32)}, five...)
		for i := 0; i < 200; i++ {
			tk, err := p.Pick(Request{Skip: []string{"a", "c", "zz"}})
			require.NoError(t, err)
			require.NotContains(t, []string{"a", "c"}, tk.Addr(), "%s picked a skipped endpoint", pol)
			clk.Advance(ms)
			p.Done(tk, Outcome{})
		}
		_, err := p.Pick(Request{Skip: five})
		assert.Equal(t, ErrNoEligible, err, "%s: every endpoint skipped", pol)
		assert.True(t, p.Eligible(0), "Skip must not change the endpoints' tags")
	}
}

// TestMark: a mark holds for its duration of engine time, counts like a
// tag, is extended (never shortened) by a later Mark, ends at once with
// d == 0, and is independent of UpdateTags.
func TestMark(t *testing.T) {
	const failed, stale Tags = 1 << 3, 1 << 30
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(33)}, "a", "b", "c")
	tagsOf := func(addr string) Tags { return statsOf(t, p, addr).Tags }

	require.NoError(t, p.Mark("a", failed, time.Second))
	assert.Equal(t, failed, tagsOf("a"))
	require.NoError(t, p.Mark("b", failed, time.Second))
	require.NoError(t, p.Mark("c", failed, time.Second))
	assert.False(t, p.Eligible(failed), "a mark must count for Eligible")
	require.NoError(t, p.Mark("b", failed, 0))
	require.NoError(t, p.Mark("c", failed, 0))
	for i := 0; i < 100; i++ {
		tk, err := p.Pick(Request{Exclude: failed})
		require.NoError(t, err)
		require.NotEqual(t, "a", tk.Addr())
		p.Done(tk, Outcome{})
	}
	clk.Advance(999 * ms)
	assert.Equal(t, failed, tagsOf("a"), "the mark ended early")
	// A shorter mark does not shorten it; a longer one extends it.
	require.NoError(t, p.Mark("a", failed, 10*ms))
	require.NoError(t, p.Mark("a", failed|stale, 2*time.Second))
	clk.Advance(time.Second)
	assert.Equal(t, failed|stale, tagsOf("a"), "a later Mark must extend")
	// UpdateTags neither sees nor clears marks.
	require.NoError(t, p.UpdateTags("a", 1, failed))
	assert.Equal(t, failed|stale|1, tagsOf("a"))
	clk.Advance(time.Second)
	_, err := p.Pick(Request{}) // expiry is lazy, on the pick path
	require.NoError(t, err)
	assert.Equal(t, Tags(1), tagsOf("a"), "the marks did not end")

	// d == 0 ends one tag's mark at once and leaves the others.
	require.NoError(t, p.Mark("b", failed|stale, time.Minute))
	require.NoError(t, p.Mark("b", stale, 0))
	assert.Equal(t, failed, tagsOf("b"))
	// Marks on several endpoints end each at its own time.
	require.NoError(t, p.Mark("c", stale, 2*time.Minute))
	clk.Advance(time.Minute)
	assert.Equal(t, Tags(0), tagsOf("b"))
	assert.Equal(t, stale, tagsOf("c"))
	clk.Advance(time.Minute)
	assert.Equal(t, Tags(0), tagsOf("c"))

	// Bad input names the bad value.
	err = p.Mark("zz", failed, time.Second)
	assert.ErrorContains(t, err, `"zz"`)
	err = p.Mark("a", failed, -time.Second)
	assert.ErrorContains(t, err, "-1s")
	// An endpoint that leaves and comes back starts unmarked.
	require.NoError(t, p.Mark("a", failed, time.Hour))
	require.NoError(t, p.SetEndpoints([]string{"b", "c"}))
	require.NoError(t, p.SetEndpoints([]string{"a", "b", "c"}))
	assert.Equal(t, Tags(0), tagsOf("a"))
}

// TestMarkUnderClockStepBack: marks run on engine time, so a clock step
// back ends them early, never late.
func TestMarkUnderClockStepBack(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(34)}, "a", "b")
	require.NoError(t, p.Mark("a", 1, 10*time.Second))
	clk.Advance(-time.Hour)
	assert.Equal(t, Tags(0), statsOf(t, p, "a").Tags)
}

// TestMarkConcurrent: marks set, extended and ended from many goroutines
// while others pick; run with -race. Once every mark is due, none is left.
func TestMarkConcurrent(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(35)}, five...)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				a := five[(g+i)%len(five)]
				switch i % 3 {
				case 0:
					_ = p.Mark(a, Tags(1)<<uint(i%32), time.Duration(i%7)*ms)
				case 1:
					clk.Advance(ms)
				}
				if tk, err := p.Pick(Request{Avoid: 0xff}); err == nil {
					p.Done(tk, Outcome{})
				}
			}
		}(g)
	}
	wg.Wait()
	clk.Advance(time.Second)
	for _, s := range p.Snapshot() {
		assert.Equal(t, Tags(0), s.Tags, "%s kept a mark that was due", s.Addr)
	}
}

// TestJitter: uniform over d×(1±frac) (χ² over 10 buckets), d itself for
// frac 0, and frac clamped to 1.
func TestJitter(t *testing.T) {
	r := NewSource(36)
	const n, buckets = 10000, 10
	d := time.Second
	counts := make([]int, buckets)
	for i := 0; i < n; i++ {
		j := Jitter(d, 0.2, r)
		require.True(t, j >= 800*ms && j < 1200*ms, "Jitter(1s, 0.2) = %v", j)
		counts[int(float64(j-800*ms)/float64(400*ms)*buckets)]++
	}
	x := chiSquare(counts, n/buckets)
	assert.Less(t, x, chiSquareCritical(buckets-1, z1e6), "not uniform: %v", counts)
	assert.Equal(t, d, Jitter(d, 0, r))
	assert.Equal(t, d, Jitter(d, -1, nil))
	for i := 0; i < 100; i++ {
		j := Jitter(d, 5, nil)
		require.True(t, j >= 0 && j < 2*d, "Jitter(1s, 5) = %v", j)
	}
}

// TestPickAllocsWithSkipAvoidMarks: the pick path stays allocation-free
// with Skip, Avoid and pending marks, for point and range reads (cheapest
// keeps its costs in arrays on the stack).
func TestPickAllocsWithSkipAvoidMarks(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(37)}, five...)
	require.NoError(t, p.Mark("b", 2, time.Hour))
	for _, c := range []Class{ClassPoint, ClassRange} {
		r := Request{Skip: []string{"a"}, Avoid: 2, Class: c}
		allocs := testing.AllocsPerRun(1000, func() {
			tk, err := p.Pick(r)
			if err != nil {
				t.Fatal(err)
			}
			clk.Advance(ms)
			p.Done(tk, Outcome{})
		})
		assert.Zero(t, allocs, "class %v", c)
	}
}
