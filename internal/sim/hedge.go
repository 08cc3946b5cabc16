package sim

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Hedge turns on hedged reads (Dean & Barroso, "The Tail at Scale"): a
// read that has had no answer after Quantile of its member's recent
// latencies (picker.Picker.Quantile, for the read's class) is sent once
// more, to a different member. The first answer wins and the other copy is
// handed back Canceled, so its member is not blamed; its work is not
// withdrawn (a member cannot tell that the client has gone, see the
// package doc). When neither answers by the deadline both are handed back
// DeadlineExceeded. Writes are never hedged.
//
// Each client has a token bucket: every read adds Budget of a token, up to
// Burst tokens, and a hedge takes one, so hedges never exceed Budget of the
// reads plus Burst, and hedging cannot feed an overload. A read whose
// member has fewer samples than the quantile needs is not hedged.
type Hedge struct {
	// Quantile is the share of the member's recent answers that may come
	// before the copy goes out. Default 0.95.
	Quantile float64
	// Budget is the most hedges per read. Default 0.05.
	Budget float64
	// Burst is the bucket's size. Default 10.
	Burst float64
}

// The Hedge defaults, as documented on its fields.
const (
	defaultHedgeQuantile = 0.95
	defaultHedgeBudget   = 0.05
	defaultHedgeBurst    = 10
)

// withDefaults fills in the zero fields and checks the others.
func (h Hedge) withDefaults() (Hedge, error) {
	if h.Quantile == 0 {
		h.Quantile = defaultHedgeQuantile
	}
	if h.Budget == 0 {
		h.Budget = defaultHedgeBudget
	}
	if h.Burst == 0 {
		h.Burst = defaultHedgeBurst
	}
	switch {
	case !(h.Quantile > 0 && h.Quantile <= 1):
		return h, fmt.Errorf("sim: hedge quantile %v must be in (0, 1]", h.Quantile)
	case !(h.Budget > 0 && h.Budget <= 1):
		return h, fmt.Errorf("sim: hedge budget %v must be in (0, 1]", h.Budget)
	case !(h.Burst >= 1):
		return h, fmt.Errorf("sim: hedge burst %v must be at least 1", h.Burst)
	}
	return h, nil
}

// Pauses are GC-like stalls of one member: it stops answering (a Blackhole
// window) for a uniformly distributed time in [Min, Max], then answers
// everything it held; the gaps between pauses are exponential with mean
// MeanGap. The schedule is drawn from the run's seed, over the whole run.
type Pauses struct {
	Member   int
	MeanGap  time.Duration
	Min, Max time.Duration
}

func (p Pauses) validate(sc Scenario) error {
	switch {
	case p.Member < 0 || p.Member >= sc.Members:
		return fmt.Errorf("sim: scenario %q: pauses: member %d out of range", sc.Name, p.Member)
	case p.MeanGap <= 0 || p.Min <= 0 || p.Max < p.Min:
		return fmt.Errorf("sim: scenario %q: pauses: gap %v and length [%v, %v] must be positive and ordered", sc.Name, p.MeanGap, p.Min, p.Max)
	}
	return nil
}

// HedgeStats describe hedging and the pauses of a run.
type HedgeStats struct {
	// Hedges counts the copies sent over the whole run, warm-up included,
	// and ExtraLoad is Hedges over the reads of the whole run: the ratio the
	// token bucket bounds by Hedge.Budget (over the measured period alone
	// it could exceed it by the tokens saved up in the warm-up). HedgeWins
	// counts the measured calls that the copy answered first.
	Hedges    int     `json:"hedges"`
	HedgeWins int     `json:"hedge_wins"`
	ExtraLoad float64 `json:"extra_load"`
	// Pauses is the number of pauses in the run; Healthy the latency of
	// the measured requests that neither started nor ended during a pause
	// and did not span one.
	Pauses  int     `json:"pauses,omitempty"`
	Healthy Latency `json:"healthy_latency_ms"`
}

// pauseFaults draws the Pauses schedule of a run as Blackhole faults.
func pauseFaults(p Pauses, seed uint64, end time.Duration) []Fault {
	rng := rand.New(rand.NewPCG(mix(seed, streamPauses), 0))
	var out []Fault
	at := time.Duration(rng.ExpFloat64() * float64(p.MeanGap))
	for at < end {
		d := p.Min + time.Duration(rng.Float64()*float64(p.Max-p.Min))
		out = append(out, Fault{Kind: Blackhole, Member: p.Member, Start: at, End: at + d})
		at += d + time.Duration(rng.ExpFloat64()*float64(p.MeanGap))
	}
	return out
}

// addPauses appends the run's pauses to its faults and schedules them; it
// runs after the scenario's own faults are scheduled, so that the
// black-hole statistics keep following the scenario's own.
func (s *sim) addPauses() {
	p := s.sc.Pauses
	if p == nil {
		return
	}
	first := len(s.sc.Faults)
	s.sc.Faults = append(append([]Fault(nil), s.sc.Faults...), pauseFaults(*p, s.opt.Seed, s.sc.Warmup+s.sc.Measure)...)
	for i := first; i < len(s.sc.Faults); i++ {
		f := s.sc.Faults[i]
		s.sched.schedule(int64(f.Start), evFaultOn, i, 0, nil)
		s.sched.schedule(int64(f.End), evFaultOff, i, 0, nil)
		s.pauses = append(s.pauses, [2]int64{int64(f.Start), int64(f.End)})
	}
}

// healthy reports whether [from, to] overlaps no pause.
func (s *sim) healthy(from, to int64) bool {
	for _, p := range s.pauses {
		if p[0] > to {
			return true
		}
		if p[1] >= from {
			return false
		}
	}
	return true
}

// scheduleHedge arms the hedge of read r, if hedging is on and r's member
// has enough samples.
func (s *sim) scheduleHedge(r *request) {
	if s.hedge == nil || r.class == picker.ClassWrite {
		return
	}
	c := r.loop.client
	c.tokens = min(s.hedge.Burst, c.tokens+s.hedge.Budget)
	s.reads++
	d, ok := c.eng.Quantile(r.ticket, s.hedge.Quantile)
	if !ok {
		return
	}
	s.sched.schedule(s.now+max(int64(d), 1), evHedge, 0, 0, r)
}

// sendHedge sends the copy of r, if r is still waiting and its client has a
// token.
func (s *sim) sendHedge(r *request) {
	c := r.loop.client
	if r.returned || r.hedge != nil || c.tokens < 1 {
		return
	}
	t, ok := s.pickOther(c.eng, s.requestFor(r.class), r.ticket.Addr())
	if !ok {
		return
	}
	c.tokens--
	m := s.addrIdx[t.Addr()]
	h := &request{class: r.class, size: r.size, bytes: r.size, loop: r.loop, member: m, ticket: t, issued: s.now, work: r.work, orig: r}
	r.hedge = h
	s.issued++
	s.outstanding++
	s.hedges++
	s.arrive(h)
}

// pickOther picks a member other than not for a copy (Request.Skip).
func (s *sim) pickOther(eng *picker.Picker, req picker.Request, not string) (picker.Ticket, bool) {
	req.Skip = []string{not}
	t, err := eng.Pick(req)
	return t, err == nil
}

// partner is the other copy of r's call, or nil.
func partner(r *request) *request {
	if r.orig != nil {
		return r.orig
	}
	return r.hedge
}

// hedgeStats summarises hedging and pauses, or nil when there were
// neither.
func (s *sim) hedgeStats() *HedgeStats {
	if s.hedge == nil && s.sc.Pauses == nil {
		return nil
	}
	h := &HedgeStats{Hedges: s.hedges, HedgeWins: s.hedgeWins, Pauses: len(s.pauses), Healthy: latencyOf(s.healthyLat)}
	if s.reads > 0 {
		h.ExtraLoad = round(float64(s.hedges)/float64(s.reads), 1e6)
	}
	return h
}
