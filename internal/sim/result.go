package sim

import (
	"math"
	"slices"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Result is what one policy did in one run. Counts cover the requests
// issued in the measured period, whenever they ended.
type Result struct {
	Policy picker.Policy `json:"policy"`
	// Hedged: reads were hedged (Options.Hedge).
	Hedged bool `json:"hedged,omitempty"`
	// Requests issued in the measured period.
	Requests int `json:"requests"`
	// Errors = DeadlineErrors + FailedErrors.
	Errors         int `json:"errors"`
	DeadlineErrors int `json:"deadline_errors"`
	FailedErrors   int `json:"failed_errors"`
	// Lost counts requests, of the whole run, whose ticket was never handed
	// back to the engine. Always 0 unless the simulation is broken.
	Lost int `json:"lost"`
	// EngineInFlight is the sum of InFlight over every engine's Snapshot at
	// the end of the run: 0 when every ticket was handed back exactly once
	// (a ticket handed back twice would drive it below zero).
	EngineInFlight int64 `json:"engine_inflight"`
	// Latency percentiles, in milliseconds; a timed-out request counts at
	// the full deadline.
	Latency Latency `json:"latency_ms"`
	// MemberShare[m] is the fraction of requests picked for member m.
	MemberShare []float64 `json:"member_share"`
	// MaxOverMeanShare is the largest share over the mean share (1/members).
	MaxOverMeanShare float64 `json:"max_over_mean_share"`
	// Throughput is Requests per second of the measured period.
	Throughput float64 `json:"throughput_rps"`
	// Utilization is the fraction of worker time spent serving during the
	// measured period (timed-out work included).
	Utilization float64 `json:"utilization"`
	// Mix holds what only a scenario with a Mix reports.
	Mix *MixStats `json:"mix,omitempty"`
	// Blackhole follows the scenario's first Blackhole fault, if any.
	Blackhole *BlackholeStats `json:"blackhole,omitempty"`
	// Recovery follows the scenario's first Slow fault that heals inside the
	// measured period, if any.
	Recovery *RecoveryStats `json:"recovery,omitempty"`
	// Phases and Oscillation describe the phases of a scenario with Phase
	// set.
	Phases      []PhaseStats `json:"phases,omitempty"`
	Oscillation *Oscillation `json:"oscillation,omitempty"`
	// Hedge describes hedging (Options.Hedge) and pauses (Scenario.Pauses).
	Hedge *HedgeStats `json:"hedge,omitempty"`
	// PicksPerSecond[k][m] counts the requests picked for member m during
	// second k of the run, warm-up included.
	PicksPerSecond [][]int `json:"-"`
}

// Latency holds percentiles (nearest rank) and the mean, in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

// MixStats describe the classes and the leader of a scenario with a Mix.
type MixStats struct {
	// Latency by class, as Result.Latency.
	Point Latency `json:"point_latency_ms"`
	Range Latency `json:"range_latency_ms"`
	Write Latency `json:"write_latency_ms"`
	// ReadShare[m] is the fraction of reads (point and range) picked for
	// member m; LeaderReadShare the leader's, and FairShare 1/members.
	ReadShare       []float64 `json:"read_share"`
	LeaderReadShare float64   `json:"leader_read_share"`
	FairShare       float64   `json:"fair_share"`
	// FollowerMaxOverMean is the largest follower read share over the
	// followers' mean read share.
	FollowerMaxOverMean float64 `json:"follower_max_over_mean"`
}

// BlackholeStats describe how a policy handled a black-holed member.
//
// A client's stall charge is the first pick of that client inside the
// window at which its engine's Snapshot shows the black-holed member with
// requests in flight and an Estimate above the one it showed when the
// window opened: from then on the engine has noticed the stall. Picks by
// that client from that moment to the end of the window count in
// RequestsAfterCharge.
type BlackholeStats struct {
	Member int     `json:"member"`
	StartS float64 `json:"start_s"`
	EndS   float64 `json:"end_s"`
	// ChargedClients is how many clients' engines charged the stall;
	// MaxChargeDelayMs the longest time from the window's start to a
	// client's charge.
	ChargedClients   int     `json:"charged_clients"`
	MaxChargeDelayMs float64 `json:"max_charge_delay_ms"`
	// RequestsAfterCharge and ToMemberAfterCharge count picks after the
	// picking client's charge, all and to the black-holed member.
	RequestsAfterCharge int     `json:"requests_after_charge"`
	ToMemberAfterCharge int     `json:"to_member_after_charge"`
	ShareAfterCharge    float64 `json:"share_after_charge"`
	// WindowRequests counts requests issued in [start-deadline, end): every
	// request the black hole could catch. WindowDeadlineErrors counts those
	// that timed out; WindowErrorRate is their ratio.
	WindowRequests       int     `json:"window_requests"`
	WindowDeadlineErrors int     `json:"window_deadline_errors"`
	WindowErrorRate      float64 `json:"window_error_rate"`
	// DroppedAtEnd counts held requests dropped when the window ended
	// because their client had given up.
	DroppedAtEnd int `json:"dropped_at_end"`
}

// The recovery criterion: the healed member's share is averaged over the
// 1 s windows from heal+RecoveryFrom to heal+RecoveryTo.
const (
	RecoveryFrom = 15 * time.Second
	RecoveryTo   = 20 * time.Second
)

// RecoveryStats describe how a policy brought a healed member back.
// Windows are the 1 s intervals [k s, (k+1) s) of virtual time; the heal
// time is rounded down to a whole second.
type RecoveryStats struct {
	Member int     `json:"member"`
	HealS  float64 `json:"heal_s"`
	// FairShare is 1/members.
	FairShare float64 `json:"fair_share"`
	// RecoveredRatio is the mean, over the windows from heal+15 s to
	// heal+20 s, of the member's share in each window, over FairShare.
	RecoveredRatio float64 `json:"recovered_ratio"`
	// PeakRatio is the member's largest share in any window of the measured
	// period, over FairShare; PeakAtS is that window's start.
	PeakRatio float64 `json:"peak_ratio"`
	PeakAtS   float64 `json:"peak_at_s"`
	// FirstFairS is how long after healing the first window began in which
	// the member had at least 0.75 × FairShare; -1 if none did.
	FirstFairS float64 `json:"first_fair_s"`
}

// Report is one scenario run under several policies with one seed.
type Report struct {
	Scenario string `json:"scenario"`
	Seed     uint64 `json:"seed"`
	// Estimates and Leader name the run's Options of the same names; they
	// matter only for a scenario with a Mix.
	Estimates string   `json:"estimates"`
	Leader    string   `json:"leader"`
	Model     Model    `json:"model"`
	Results   []Result `json:"results"`
}

// Model summarises a scenario's parameters, for reports.
type Model struct {
	Clients       int         `json:"clients"`
	Loops         int         `json:"loops_per_client"`
	Members       int         `json:"members"`
	Workers       int         `json:"workers_per_member"`
	MeanServiceMs float64     `json:"mean_service_ms"`
	ThinkMs       float64     `json:"think_ms"`
	TargetLoad    float64     `json:"target_load"`
	CapacityRps   float64     `json:"capacity_rps"`
	DeadlineMs    float64     `json:"deadline_ms"`
	WarmupS       float64     `json:"warmup_s"`
	MeasureS      float64     `json:"measure_s"`
	Faults        []FaultInfo `json:"faults,omitempty"`
	Mix           *Mix        `json:"mix,omitempty"`
}

// FaultInfo is a Fault for reports; EndS is 0 for a fault that never heals.
type FaultInfo struct {
	Kind   string  `json:"kind"`
	Member int     `json:"member"`
	StartS float64 `json:"start_s"`
	EndS   float64 `json:"end_s"`
	Factor float64 `json:"factor,omitempty"`
}

// ModelOf summarises sc.
func ModelOf(sc Scenario) Model {
	m := Model{
		Clients: sc.Clients, Loops: sc.Loops, Members: sc.Members, Workers: sc.Workers,
		MeanServiceMs: ms(sc.MeanService), ThinkMs: round(ms(sc.ThinkTime()), 1e3),
		TargetLoad: sc.Load, CapacityRps: sc.Capacity(), DeadlineMs: ms(sc.Deadline),
		WarmupS: sc.Warmup.Seconds(), MeasureS: sc.Measure.Seconds(), Mix: sc.Mix,
	}
	for _, f := range sc.Faults {
		m.Faults = append(m.Faults, FaultInfo{
			Kind: f.Kind.String(), Member: f.Member,
			StartS: f.Start.Seconds(), EndS: f.End.Seconds(), Factor: f.Factor,
		})
	}
	return m
}

// RunScenario runs sc under each policy with the same seed and the rest of
// base (Engine, Estimates, Leader; its Scenario, Policy and Seed are
// ignored; the zero value gives the engine's defaults and the adapters'
// requests). When base.Engine.EjectAfter is 0, the policies that stand for
// stock clients (round-robin, shuffled-pin, pinned) run without ejection,
// as grpc's round_robin and the etcd v2 client do; a non-zero EjectAfter
// applies to every policy.
func RunScenario(sc Scenario, seed uint64, policies []picker.Policy, base Options) (Report, error) {
	rep := Report{Scenario: sc.Name, Seed: seed, Model: ModelOf(sc), Estimates: base.Estimates.String(), Leader: base.Leader.String()}
	for _, p := range policies {
		opt := base
		opt.Scenario, opt.Policy, opt.Seed = sc, p, seed
		if opt.Engine.EjectAfter == 0 && StandsForStockClient(p) {
			opt.Engine.EjectAfter = -1
		}
		r, err := Run(opt)
		if err != nil {
			return Report{}, err
		}
		rep.Results = append(rep.Results, r)
	}
	return rep, nil
}

// StandsForStockClient reports whether pol models a stock client (plain
// round robin, a pin) rather than one of our load-aware policies.
func StandsForStockClient(pol picker.Policy) bool {
	return pol == picker.RoundRobin || pol == picker.ShuffledPin || pol == picker.Pinned
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// round rounds v to 1/scale, so that reports stay readable.
func round(v, scale float64) float64 { return math.Round(v*scale) / scale }

// percentile is the nearest-rank q-quantile of sorted (non-empty).
func percentile(sorted []int64, q float64) int64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func (s *sim) result(pol picker.Policy) Result {
	r := Result{
		Policy:         pol,
		Requests:       s.requests,
		Errors:         s.deadErrs + s.failErrs,
		DeadlineErrors: s.deadErrs,
		FailedErrors:   s.failErrs,
		Lost:           s.issued - s.returned,
		Throughput:     round(float64(s.requests)/s.sc.Measure.Seconds(), 1e3),
		PicksPerSecond: s.perSecond,
	}
	for _, c := range s.clients {
		for _, st := range c.eng.Snapshot() {
			r.EngineInFlight += st.InFlight
		}
	}
	r.Latency = latencyOf(s.latencies)
	if mx := s.sc.Mix; mx != nil {
		ms := &MixStats{
			Point: latencyOf(s.classLat[picker.ClassPoint]), Range: latencyOf(s.classLat[picker.ClassRange]),
			Write: latencyOf(s.classLat[picker.ClassWrite]), FairShare: 1 / float64(s.sc.Members),
		}
		reads := 0
		for _, n := range s.readPicks {
			reads += n
		}
		ms.ReadShare = make([]float64, s.sc.Members)
		maxF, sumF := 0.0, 0.0
		for m, n := range s.readPicks {
			sh := float64(n) / float64(max(1, reads))
			ms.ReadShare[m] = round(sh, 1e6)
			if m != mx.Leader {
				maxF, sumF = max(maxF, sh), sumF+sh
			}
		}
		ms.LeaderReadShare = ms.ReadShare[mx.Leader]
		if sumF > 0 {
			ms.FollowerMaxOverMean = round(maxF*float64(s.sc.Members-1)/sumF, 1e4)
		}
		r.Mix = ms
	}
	r.MemberShare = make([]float64, s.sc.Members)
	maxShare := 0.0
	for m, n := range s.picks {
		if s.requests > 0 {
			r.MemberShare[m] = round(float64(n)/float64(s.requests), 1e6)
		}
		maxShare = max(maxShare, float64(n)/float64(max(1, s.requests)))
	}
	r.MaxOverMeanShare = round(maxShare*float64(s.sc.Members), 1e4)
	var busy float64
	for _, m := range s.members {
		s.account(m)
		busy += m.busyNs
	}
	r.Utilization = round(busy/(float64(s.sc.Members*s.sc.Workers)*float64(s.mEnd-s.mStart)), 1e4)
	if s.bh != nil {
		r.Blackhole = s.blackholeStats()
	}
	r.Recovery = s.recoveryStats()
	r.Phases, r.Oscillation = s.phaseStats()
	r.Hedge = s.hedgeStats()
	r.Hedged = s.hedge != nil
	return r
}

// latencyOf summarises samples (ns), in milliseconds.
func latencyOf(samples []int64) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	lat := slices.Clone(samples)
	slices.Sort(lat)
	var sum float64
	for _, v := range lat {
		sum += float64(v)
	}
	toMs := func(v int64) float64 { return round(float64(v)/1e6, 1e3) }
	return Latency{
		P50: toMs(percentile(lat, 0.50)), P90: toMs(percentile(lat, 0.90)),
		P99: toMs(percentile(lat, 0.99)), P999: toMs(percentile(lat, 0.999)),
		Mean: round(sum/float64(len(lat))/1e6, 1e3), Max: toMs(lat[len(lat)-1]),
	}
}

func (s *sim) blackholeStats() *BlackholeStats {
	bh := s.bh
	st := &BlackholeStats{
		Member: bh.member, StartS: float64(bh.start) / 1e9, EndS: float64(bh.end) / 1e9,
		RequestsAfterCharge: bh.afterTotal, ToMemberAfterCharge: bh.afterTo,
		WindowRequests: bh.winReqs, WindowDeadlineErrors: bh.winDead,
		DroppedAtEnd: bh.dropped,
	}
	for _, c := range s.clients {
		if c.charged {
			st.ChargedClients++
			st.MaxChargeDelayMs = max(st.MaxChargeDelayMs, round(float64(c.chargedAt-bh.start)/1e6, 1e3))
		}
	}
	if bh.afterTotal > 0 {
		st.ShareAfterCharge = round(float64(bh.afterTo)/float64(bh.afterTotal), 1e6)
	}
	if bh.winReqs > 0 {
		st.WindowErrorRate = round(float64(bh.winDead)/float64(bh.winReqs), 1e6)
	}
	return st
}

func (s *sim) recoveryStats() *RecoveryStats {
	sec := int64(time.Second)
	for _, f := range s.sc.Faults {
		heal := int64(f.End)
		if f.Kind != Slow || heal <= s.mStart || heal >= s.mEnd {
			continue
		}
		fair := 1 / float64(s.sc.Members)
		share := func(k int64) float64 {
			row := s.perSecond[k]
			tot := 0
			for _, n := range row {
				tot += n
			}
			if tot == 0 {
				return 0
			}
			return float64(row[f.Member]) / float64(tot)
		}
		st := &RecoveryStats{Member: f.Member, HealS: f.End.Seconds(), FairShare: fair, FirstFairS: -1}
		h := heal / sec
		var sum float64
		var n int
		for k := h + int64(RecoveryFrom)/sec; k < h+int64(RecoveryTo)/sec && (k+1)*sec <= s.mEnd; k++ {
			sum += share(k)
			n++
		}
		if n > 0 {
			st.RecoveredRatio = round(sum/float64(n)/fair, 1e4)
		}
		for k := (s.mStart + sec - 1) / sec; (k+1)*sec <= s.mEnd; k++ {
			v := share(k) / fair
			if v > st.PeakRatio {
				st.PeakRatio, st.PeakAtS = round(v, 1e4), float64(k)
			}
			if k >= h && st.FirstFairS < 0 && v >= 0.75 {
				st.FirstFairS = float64(k - h)
			}
		}
		return st
	}
	return nil
}
