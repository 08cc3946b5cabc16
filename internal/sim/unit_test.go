package sim

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

func TestThinkTimeFormula(t *testing.T) {
	for _, sc := range Scenarios() {
		z, r := sc.ThinkTime(), sc.ResponseTime()
		// Little's law: N loops, each cycling every Z+R, give the target
		// throughput.
		x := float64(sc.Clients*sc.Loops) / (z + r).Seconds()
		if want := sc.Load * sc.Capacity(); math.Abs(x-want) > 1 {
			t.Errorf("%s: throughput %v req/s, want %v", sc.Name, x, want)
		}
	}
	sc, _ := Lookup("homogeneous")
	if c := sc.Capacity(); c != 2000 {
		t.Errorf("capacity %v, want 2000 req/s", c)
	}
	// M/M/4 at 60%: P(wait) ≈ 0.287, Wq = P·S/(c(1-ρ)) ≈ 1.79 ms.
	if r := sc.ResponseTime(); r < 11700*time.Microsecond || r > 11900*time.Microsecond {
		t.Errorf("response time %v, want ≈ 11.8ms", r)
	}
}

func TestValidate(t *testing.T) {
	good, _ := Lookup("homogeneous")
	tests := []struct {
		name   string
		mutate func(*Scenario)
		want   string
	}{
		{"no clients", func(s *Scenario) { s.Clients = 0 }, "at least one client"},
		{"one member", func(s *Scenario) { s.Members = 1 }, "1 members"},
		{"no workers", func(s *Scenario) { s.Workers = 0 }, "0 workers"},
		{"load 1", func(s *Scenario) { s.Load = 1 }, "load 1"},
		{"too few loops", func(s *Scenario) { s.Loops = 1 }, "too few loops"},
		{"no deadline", func(s *Scenario) { s.Deadline = 0 }, "must be positive"},
		{"fault member", func(s *Scenario) { s.Faults = []Fault{{Kind: Slow, Member: 5, Factor: 2}} }, "member 5 out of range"},
		{"fault window", func(s *Scenario) { s.Faults = []Fault{{Kind: Remove, Start: 2, End: 1}} }, "bad window"},
		{"fault factor", func(s *Scenario) { s.Faults = []Fault{{Kind: Slow}} }, "slow factor"},
		{"fault kind", func(s *Scenario) { s.Faults = []Fault{{Kind: 9}} }, "unknown kind 9"},
		{"mix leader", func(s *Scenario) { s.Mix = baseMix(); s.Mix.Leader = 7 }, "leader 7 out of range"},
		{"mix shares", func(s *Scenario) { s.Mix = baseMix(); s.Mix.Writes = 0.99 }, "must be shares"},
		{"mix link", func(s *Scenario) { s.Mix = baseMix(); s.Mix.LinkRate = 0 }, "link rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := good
			tt.mutate(&sc)
			err := sc.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
			if _, err := Run(Options{Scenario: sc}); err == nil {
				t.Fatal("Run accepted an invalid scenario")
			}
		})
	}
	for _, sc := range Scenarios() {
		if err := sc.Validate(); err != nil {
			t.Errorf("%s: %v", sc.Name, err)
		}
	}
	if _, err := Run(Options{Scenario: good, Policy: "fastest"}); err == nil || !strings.Contains(err.Error(), "fastest") {
		t.Errorf("Run with an unknown policy: %v", err)
	}
	if _, err := Run(Options{Scenario: good, Engine: picker.Config{SlowStartPenalty: 0.5}}); err == nil {
		t.Error("Run accepted a bad engine config")
	}
}

func TestPercentile(t *testing.T) {
	v := make([]int64, 1000)
	for i := range v {
		v[i] = int64(i + 1)
	}
	for _, tt := range []struct {
		q    float64
		want int64
	}{{0.5, 500}, {0.9, 900}, {0.99, 990}, {0.999, 999}, {1, 1000}, {0, 1}} {
		if got := percentile(v, tt.q); got != tt.want {
			t.Errorf("percentile(%v) = %d, want %d", tt.q, got, tt.want)
		}
	}
	if got := percentile([]int64{7}, 0.999); got != 7 {
		t.Errorf("percentile of one value = %d", got)
	}
}

func TestSchedulerOrder(t *testing.T) {
	var s scheduler
	// Same instant: first scheduled, first run.
	for i, at := range []int64{30, 10, 20, 10, 30, 10} {
		s.schedule(at, evWake, i, 0, nil)
	}
	var got []int
	for {
		if _, ok := s.peek(); !ok {
			break
		}
		got = append(got, s.pop().id)
	}
	want := []int{1, 3, 5, 2, 0, 4}
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

// TestSchedulerHeap interleaves schedules and pops, as a run does, and
// checks every pop against a sorted reference: the earliest (at, seq).
func TestSchedulerHeap(t *testing.T) {
	var s scheduler
	rng := rand.New(rand.NewPCG(1, 2))
	type key struct{ at, id int64 }
	var ref []key // pending, in (at, scheduling order)
	id := int64(0)
	for step := 0; step < 20000; step++ {
		if len(ref) == 0 || rng.IntN(5) < 3 {
			at := int64(rng.IntN(200)) // few instants: many ties
			s.schedule(at, evWake, int(id), 0, nil)
			k := key{at, id}
			i, _ := slices.BinarySearchFunc(ref, k, func(a, b key) int {
				if a.at != b.at {
					return int(a.at - b.at)
				}
				return int(a.id - b.id)
			})
			ref = slices.Insert(ref, i, k)
			id++
			continue
		}
		at, ok := s.peek()
		require.True(t, ok)
		require.Equal(t, ref[0].at, at, "step %d", step)
		e := s.pop()
		require.Equal(t, ref[0], key{e.at, int64(e.id)}, "step %d", step)
		ref = ref[1:]
	}
	require.Len(t, s.q, len(ref))
}

func TestFIFO(t *testing.T) {
	var f fifo
	rs := make([]*request, 5000)
	for i := range rs {
		rs[i] = &request{issued: int64(i)}
	}
	next := 0
	for i, r := range rs {
		f.push(r)
		if i%3 == 2 { // pop two of every three, so that compaction kicks in
			for k := 0; k < 2; k++ {
				if got := f.pop(); got != rs[next] {
					t.Fatalf("pop %d: got request %d", next, got.issued)
				}
				next++
			}
		}
	}
	rest := f.drain()
	if len(rest) != len(rs)-next || rest[0] != rs[next] || f.len() != 0 {
		t.Fatalf("drain returned %d items starting at %d; len after %d", len(rest), rest[0].issued, f.len())
	}
}

// TestTimedOutWorkIsServed: a member 1000× slower than normal keeps its
// worker busy with requests whose clients gave up long ago, as etcd would.
func TestTimedOutWorkIsServed(t *testing.T) {
	t.Parallel()
	sc := Scenario{
		Name: "stuck", Clients: 1, Loops: 1, Members: 2, Workers: 1,
		MeanService: 10 * time.Millisecond, Load: 0.05, Deadline: time.Second,
		Warmup: time.Second, Measure: 20 * time.Second,
		Faults: []Fault{{Kind: Slow, Member: 0, Factor: 1000}},
	}
	r, err := Run(Options{Scenario: sc, Policy: picker.RoundRobin, Seed: 1, Engine: picker.Config{EjectAfter: -1}})
	if err != nil {
		t.Fatal(err)
	}
	checkBookkeeping(t, runKey{scenario: sc.Name}, r)
	t.Logf("requests %d, deadline errors %d, utilisation %.3f", r.Requests, r.DeadlineErrors, r.Utilization)
	// Round robin alternates: about half the requests go to the stuck
	// member and time out.
	if r.DeadlineErrors < r.Requests/3 {
		t.Errorf("%d of %d requests timed out, want about half", r.DeadlineErrors, r.Requests)
	}
	// The stuck member's one worker stays busy all the time: half of the
	// cluster's two workers.
	if r.Utilization < 0.45 {
		t.Errorf("utilisation %.3f: timed-out work was not served", r.Utilization)
	}
}

// TestBlackholeRelease: at the end of the window, requests whose client
// gave up are dropped; the engine's round robin keeps sending to the
// member until it ejects it, so some are.
func TestBlackholeRelease(t *testing.T) {
	t.Parallel()
	r := result(t, runKey{scenario: "blackhole", policy: picker.RoundRobin, seed: 1})
	b := r.Blackhole
	if b.DroppedAtEnd == 0 || b.WindowDeadlineErrors < b.DroppedAtEnd {
		t.Errorf("dropped %d at the end, %d timed out: want some dropped, each of them timed out", b.DroppedAtEnd, b.WindowDeadlineErrors)
	}
}
