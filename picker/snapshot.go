package picker

import (
	"math"
	"sync/atomic"
	"time"
)

// EndpointStats is one endpoint's state at one moment, for logs and
// metrics. Counters are cumulative since the endpoint joined the set.
type EndpointStats struct {
	Addr string
	Tags Tags
	// Picks counts tickets issued, unary and stream.
	Picks int64
	// InFlight counts unary requests not yet handed back.
	InFlight int64
	// Streams counts open streams.
	Streams int64
	// Measured is false until the first latency sample of any class.
	Measured bool
	// Estimate is the latency the cost of a ClassPoint request uses now:
	// the peak EWMA (or the median of the others while unmeasured),
	// idle-decayed, and raised to the age of a stall.
	Estimate time.Duration
	// Cost is the p2c-ewma cost of a ClassPoint request now, in
	// nanoseconds.
	Cost float64
	// Failures counts blamed failures; ConsecutiveFailures those since the
	// last success.
	Failures            int64
	ConsecutiveFailures int64
	// Ejected is true while the endpoint is out of rotation; EjectedUntil
	// is when its probe may go (zero when not ejected).
	Ejected      bool
	EjectedUntil time.Time
}

// Snapshot returns the stats of every endpoint in the set's current order.
func (p *Picker) Snapshot() []EndpointStats {
	now := p.now()
	p.expireMarks(now)
	wall := p.clock.Now()
	med := p.median(ClassPoint, now)
	st := p.load()
	out := make([]EndpointStats, len(st.eps))
	for i, e := range st.eps {
		in := atomic.LoadInt64(&e.inflight)
		s := EndpointStats{
			Addr:                e.addr,
			Tags:                e.tagsNow(),
			Picks:               atomic.LoadInt64(&e.picks),
			InFlight:            in,
			Streams:             atomic.LoadInt64(&e.streams),
			Measured:            e.measured(),
			Estimate:            time.Duration(math.Ceil(e.rtt(&p.s, ClassPoint, now, med, in))),
			Cost:                e.cost(&p.s, ClassPoint, now, med),
			Failures:            atomic.LoadInt64(&e.failures),
			ConsecutiveFailures: atomic.LoadInt64(&e.consecFail),
		}
		if u := atomic.LoadInt64(&e.ejectedUntil); u != 0 {
			s.Ejected = true
			s.EjectedUntil = wall.Add(time.Duration(u - now))
		}
		out[i] = s
	}
	return out
}
