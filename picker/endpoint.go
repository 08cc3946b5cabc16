package picker

import (
	"math"
	"sync/atomic"
)

// endpoint is one member's statistics. Every field but addr is read and
// written with sync/atomic only; 64-bit fields come first so that they stay
// aligned on 32-bit platforms. Times are nanoseconds on the picker's clock
// since its epoch, always > 0 once set.
type endpoint struct {
	est [numClasses]classEst
	// hist holds each class's OK latencies, for Quantile.
	hist [numClasses]histogram
	// markUntil is, per tag bit, when its Mark ends; 0 = never marked or
	// ended with Mark(…, 0). Bits in marks whose time has come are
	// cleared lazily (Picker.expireMarks).
	markUntil    [32]int64
	classPicks   [numClasses]int64 // unary tickets by Class
	lastDone     int64             // last answer or failure of a unary request (a cancel is neither)
	busySince    int64             // when inflight last went from 0 to 1, or the unanswered stretch began (issue)
	unanswered   int64             // start of the oldest request canceled since lastDone; 0 = none
	lastCancel   int64             // when a unary request was last canceled
	slowSince    int64             // start of the current slow start; 0 = none
	picks        int64             // tickets issued, unary and stream
	inflight     int64             // unary requests in flight
	rangeIn      int64             // ClassRange requests in flight: the queue a range read joins
	rangeLast    int64             // when the last ClassRange ticket was issued; 0 = never (cheapest)
	streams      int64             // streams open
	failures     int64             // blamed failures, total
	consecFail   int64             // blamed failures since the last success
	ejectedUntil int64             // 0 = not ejected; else when the probe may go
	ejections    int64             // ejections in a row, for the backoff
	lastEjectEnd int64             // when the last ejection ended, to reset the backoff
	lastFail     int64             // when the last blamed failure came back
	reserveProbe int64             // when the last reserve probe was issued (Request.Reserve)
	tags         uint32            // caller-defined Tags, set with UpdateTags
	marks        uint32            // Tags set by Mark, until their markUntil
	probing      int32             // 1 while the single probe after an ejection is out

	addr string // immutable
}

// tagsNow is the endpoint's tags: those of UpdateTags and of Mark.
func (e *endpoint) tagsNow() Tags {
	return Tags(atomic.LoadUint32(&e.tags) | atomic.LoadUint32(&e.marks))
}

// classEst is the latency estimate of one request class.
type classEst struct {
	estBits    uint64 // peak-EWMA latency, float64 ns bits; 0 = never measured
	lastSample int64  // when estBits was last updated
}

// measured reports whether any class has a sample.
func (e *endpoint) measured() bool {
	for i := range e.est {
		if atomic.LoadUint64(&e.est[i].estBits) != 0 {
			return true
		}
	}
	return false
}

// sample folds one latency observation into the peak EWMA. A sample above
// the current estimate replaces it (up to PeakStep times it); otherwise the estimate decays toward it
// by the time since the last sample. The base is the idle-decayed estimate,
// so an endpoint that was avoided for a long time returns near the median.
// full marks a charge (a failure or deadline) that bypasses PeakStep; raw
// skips the idle decay of the base.
func (e *endpoint) sample(s *settings, c Class, v float64, now int64, med float64, full, raw bool) {
	ce := &e.est[c]
	for {
		oldBits := atomic.LoadUint64(&ce.estBits)
		last := atomic.LoadInt64(&ce.lastSample)
		nv := v
		if oldBits != 0 {
			base := math.Float64frombits(oldBits)
			if !raw {
				base = idleDecayed(s, base, now-last, med)
			}
			if v >= base {
				if !full && s.peakStep != 0 && v > base*s.peakStep {
					nv = base * s.peakStep
				}
			} else {
				w := math.Exp(-float64(now-last) / s.decay)
				if w > s.maxKeep {
					w = s.maxKeep
				}
				nv = base*w + v*(1-w)
			}
		}
		if nv < 1 {
			nv = 1 // keep estBits != 0 once measured
		}
		if atomic.CompareAndSwapUint64(&ce.estBits, oldBits, math.Float64bits(nv)) {
			atomic.StoreInt64(&ce.lastSample, now)
			return
		}
	}
}

// idleDecayed pulls est toward med once gap exceeds the idle grace.
func idleDecayed(s *settings, est float64, gap int64, med float64) float64 {
	if s.idleDecay == 0 || gap <= s.idleGrace {
		return est
	}
	return med + (est-med)*math.Exp(-float64(gap-s.idleGrace)/s.idleDecay)
}

// rtt is the latency estimate of class c used for cost at time now: the
// peak EWMA (or the class median when unmeasured), idle-decayed, and raised
// to the age of a stall when requests are in flight and nothing has
// completed for longer than the estimate. It never changes the stored
// estimate.
func (e *endpoint) rtt(s *settings, c Class, now int64, med float64, inflight int64) float64 {
	ce := &e.est[c]
	var r float64
	if bits := atomic.LoadUint64(&ce.estBits); bits == 0 {
		r = med
	} else {
		r = idleDecayed(s, math.Float64frombits(bits), now-atomic.LoadInt64(&ce.lastSample), med)
	}
	return e.stalled(s, r, now, inflight)
}

// reserveRTT is the estimate that opens the gate of a reserve endpoint
// (Config.ReserveRatio): rtt without the idle drift. A reserve endpoint is
// idle by design, and the drift would pull its estimate to the median of
// the others, which keeps the gate shut for good; probes keep it current,
// and their samples are folded into this estimate, not the drifted one.
func (e *endpoint) reserveRTT(s *settings, c Class, now int64, med float64) float64 {
	r := med
	if bits := atomic.LoadUint64(&e.est[c].estBits); bits != 0 {
		r = math.Float64frombits(bits)
	}
	return e.stalled(s, r, now, atomic.LoadInt64(&e.inflight))
}

// stalled raises r to the age of a stall: requests in flight and nothing
// answered for longer than r. Requests canceled unanswered count as in
// flight until IdleGrace after the last of them: a hedge loser on a member
// in a pause is canceled as soon as its copy answers, and without this the
// member would look healthy to the next first attempt each time.
func (e *endpoint) stalled(s *settings, r float64, now int64, inflight int64) float64 {
	var since int64
	switch {
	case inflight > 0:
		since = atomic.LoadInt64(&e.busySince)
	default:
		if since = e.unansweredSince(s, now); since == 0 {
			return r
		}
	}
	if d := atomic.LoadInt64(&e.lastDone); d > since {
		since = d
	}
	if age := float64(now - since); age > r {
		r = age
	}
	return r
}

// unansweredSince is the start of the stretch of requests canceled
// unanswered, while the last cancel is within IdleGrace of now; 0 when
// there is none or the endpoint has been idle since.
func (e *endpoint) unansweredSince(s *settings, now int64) int64 {
	u := atomic.LoadInt64(&e.unanswered)
	if u == 0 || now-atomic.LoadInt64(&e.lastCancel) > s.idleGrace {
		return 0
	}
	return u
}

// cost is the p2c-ewma load for class cl: rtt × (q+1), times the
// slow-start penalty, where q is the queue the request would join (the
// requests in flight, or for a range read the range reads in flight).
func (e *endpoint) cost(s *settings, cl Class, now int64, med float64) float64 {
	c, _ := e.load(s, cl, now, med)
	return c
}

// load is cost together with its queue q.
func (e *endpoint) load(s *settings, cl Class, now int64, med float64) (float64, int64) {
	in := atomic.LoadInt64(&e.inflight)
	q := in
	if cl == ClassRange {
		// A range read waits behind the range reads already on the
		// member's link, not behind its small requests: counting those
		// would keep Lists off the member that serves most point reads
		// and split the members into List servers and Get servers.
		q = atomic.LoadInt64(&e.rangeIn)
	}
	c := e.rtt(s, cl, now, med, in) * float64(q+1)
	if s.slowStart > 0 {
		if since := atomic.LoadInt64(&e.slowSince); since != 0 {
			if el := now - since; el < s.slowStart {
				c *= 1 + (s.slowPenalty-1)*float64(s.slowStart-el)/float64(s.slowStart)
			}
		}
	}
	return c, q
}

// ejected reports whether e is out of rotation. An endpoint whose ejection
// has ended stays out until its single probe succeeds.
func (e *endpoint) ejected() bool {
	return atomic.LoadInt64(&e.ejectedUntil) != 0
}

// probeDue reports whether e's ejection has ended and no probe is out.
func (e *endpoint) probeDue(now int64) bool {
	u := atomic.LoadInt64(&e.ejectedUntil)
	return u != 0 && now >= u && atomic.LoadInt32(&e.probing) == 0
}
