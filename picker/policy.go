package picker

import (
	"math"
	"sync/atomic"
)

// choose applies the policy to the endpoints in mask (never empty).
func (p *Picker) choose(st *state, mask uint64, k Kind, c Class, now int64) int {
	if single(mask) {
		return lowest(mask)
	}
	switch p.s.policy {
	case polP2C:
		if k == Stream {
			return p.leastBy(st, p.unfailed(st, mask, now), &streamsOf)
		}
		if c == ClassRange {
			return p.cheapest(st, mask, c, now)
		}
		return p.p2c(st, mask, c, now)
	case polLeast:
		if k == Stream {
			return p.leastBy(st, p.unfailed(st, mask, now), &streamsOf)
		}
		return p.leastBy(st, mask, &inflightOf)
	case polRR:
		n := uint64(len(st.eps))
		return nextIn(mask, int(atomic.AddUint64(&p.rr, 1)%n), len(st.eps))
	default:
		return nextIn(mask, int(atomic.LoadInt32(&st.pin)), len(st.eps))
	}
}

// p2c draws two distinct endpoints and keeps the cheaper, ties at random.
// Unlike range reads (cheapest), near-ties are not taken in turn: in the
// scale model (internal/sim) that cost the fast member of a phase its lead
// in 3 of 20 runs, and the point reads of the harness's incident spread
// within its target without it once those that waited behind a List give
// no sample (Done).
func (p *Picker) p2c(st *state, mask uint64, c Class, now int64) int {
	ia, ib := pair(mask, p.rand.Uint64())
	med := p.median(c, now)
	ca := st.eps[ia].cost(&p.s, c, now, med)
	cb := st.eps[ib].cost(&p.s, c, now, med)
	switch {
	case ca < cb:
		return ia
	case cb < ca:
		return ib
	case p.rand.Uint64()&1 == 0:
		return ia
	}
	return ib
}

// rangeNearTie is how much dearer than the cheapest an endpoint with as
// many range reads in flight may be and still count as tied with it for a
// range read. A List's latency is its size over a link that other Lists
// share, so a List that overlapped another doubles its member's peak
// estimate for a while, and the estimates of equal members differ by up
// to that much: under a strict minimum, that noise, not the load, decided
// which members got the Lists, and the point reads, which follow the links
// Lists leave free, piled onto the others (harness, incident: read
// max/mean up to 1.37).
const rangeNearTie = 1.5

// cheapest is the pick of a range read: of the endpoints in mask with as
// many range reads in flight as the cheapest and a cost within
// rangeNearTie of it, the one whose last range read was issued longest ago
// (exact ties uniformly at random), so that equal members take Lists in
// turn. Range reads use it rather than the better of two: a List's answer
// is large, so it holds its member's link for a long time and Lists queue
// behind each other there, and the shortest of all the queues drains them
// measurably faster than the shorter of two (the harness's incident
// scenario, session 3: p99 at or below least-request's in 6 runs of 6,
// against 4 of 6 with the better of two).
// Lists are a few percent of the requests, so the two scans cost little,
// and each List's weight shows in its member's cost (range reads in
// flight) at once, so consecutive Lists spread.
func (p *Picker) cheapest(st *state, mask uint64, c Class, now int64) int {
	med := p.median(c, now)
	var costs [MaxEndpoints]float64
	var queues [MaxEndpoints]int64
	lowest, lowestQ := math.Inf(1), int64(0)
	for i, e := range st.eps {
		if mask&(1<<uint(i)) != 0 {
			costs[i], queues[i] = e.load(&p.s, c, now, med)
			if costs[i] < lowest {
				lowest, lowestQ = costs[i], queues[i]
			}
		}
	}
	best, ties := -1, 0
	var bestLast int64
	for i, e := range st.eps {
		if mask&(1<<uint(i)) == 0 || queues[i] != lowestQ || costs[i] > lowest*rangeNearTie {
			continue
		}
		last := atomic.LoadInt64(&e.rangeLast)
		switch {
		case best < 0 || last < bestLast:
			best, bestLast, ties = i, last, 1
		case last == bestLast: // uniformly at random, as leastBy
			ties++
			if p.rand.Uint64()%uint64(ties) == 0 {
				best = i
			}
		}
	}
	return best
}

// unfailed narrows mask to endpoints that have not failed within the last
// EjectBase (1s by default) without a success since, when there are any.
// Streams give no latency sample, so their count alone would send a watch
// straight back to a member that just cut one off; the time bound lets a
// client that only opens streams return to a member that has recovered.
func (p *Picker) unfailed(st *state, mask uint64, now int64) uint64 {
	var m uint64
	for i, e := range st.eps {
		if mask&(1<<uint(i)) == 0 {
			continue
		}
		if atomic.LoadInt64(&e.consecFail) == 0 || now-atomic.LoadInt64(&e.lastFail) >= p.s.ejectBase {
			m |= 1 << uint(i)
		}
	}
	if m == 0 {
		return mask
	}
	return m
}

// pair maps one random value to two distinct members of mask (≥ 2 bits),
// uniformly over ordered pairs.
func pair(mask, r uint64) (int, int) {
	k := uint64(popcount(mask))
	a := (r & 0xffffffff) % k
	b := (r >> 32) % (k - 1)
	if b >= a {
		b++
	}
	return nth(mask, int(a)), nth(mask, int(b))
}

// counter reads one of an endpoint's counts. Passed as a pointer to a
// package-level func value so that the call does not allocate.
type counter func(e *endpoint) int64

var (
	inflightOf counter = func(e *endpoint) int64 { return atomic.LoadInt64(&e.inflight) }
	streamsOf  counter = func(e *endpoint) int64 { return atomic.LoadInt64(&e.streams) }
)

// leastBy takes the endpoint with the smallest count; ties are broken
// uniformly at random (reservoir sampling over the tied ones).
func (p *Picker) leastBy(st *state, mask uint64, c *counter) int {
	best, ties := -1, 0
	var bestV int64
	for i, e := range st.eps {
		if mask&(1<<uint(i)) == 0 {
			continue
		}
		v := (*c)(e)
		switch {
		case best < 0 || v < bestV:
			best, bestV, ties = i, v, 1
		case v == bestV:
			ties++
			if p.rand.Uint64()%uint64(ties) == 0 {
				best = i
			}
		}
	}
	return best
}

// maybeReserved applies the rule of Config.ReserveRatio. When every
// endpoint in mask has a latency estimate for class c above ReserveRatio
// times that of the best reserve endpoint, the pick is made again with the
// reserve endpoints as ordinary candidates: the pairs without them keep
// the others sampled, so the gate closes again once they recover. Else it
// returns the best reserve endpoint as a probe when its estimate is stale
// (see Config.ReserveRatio), or chosen. Estimates, not costs, open the
// gate: an endpoint with many requests in flight is busy, not slow.
func (p *Picker) maybeReserved(st *state, mask, reserve uint64, chosen int, c Class, now int64) int {
	med := p.median(c, now)
	minRest := -1.0
	best, bestRTT := -1, 0.0
	for i, e := range st.eps {
		bit := uint64(1) << uint(i)
		switch {
		case mask&bit != 0:
			if v := e.rtt(&p.s, c, now, med, atomic.LoadInt64(&e.inflight)); minRest < 0 || v < minRest {
				minRest = v
			}
		case reserve&bit != 0:
			if v := e.reserveRTT(&p.s, c, now, med); best < 0 || v < bestRTT {
				best, bestRTT = i, v
			}
		}
	}
	if minRest > p.s.reserveRatio*bestRTT {
		return p.choose(st, mask|reserve, Unary, c, now)
	}
	e := st.eps[best]
	// Probe: keeps the estimate that opens the gate current, at most once
	// per reserveProbeEvery and in at most 1 of 2n picks.
	last := atomic.LoadInt64(&e.reserveProbe)
	if now-atomic.LoadInt64(&e.est[c].lastSample) >= reserveProbeEvery && now-last >= reserveProbeEvery &&
		p.rand.Uint64()%uint64(2*popcount(mask|reserve)) == 0 &&
		atomic.CompareAndSwapInt64(&e.reserveProbe, last, now) {
		return best
	}
	return chosen
}

func single(m uint64) bool { return m&(m-1) == 0 }

func popcount(m uint64) int {
	n := 0
	for ; m != 0; m &= m - 1 {
		n++
	}
	return n
}

func lowest(m uint64) int {
	i := 0
	for m&1 == 0 {
		m >>= 1
		i++
	}
	return i
}

// nth returns the index of the k-th (0-based) set bit of m.
func nth(m uint64, k int) int {
	for ; k > 0; k-- {
		m &= m - 1
	}
	return lowest(m)
}

// nextIn returns the first index at or after start (cyclically) in mask.
func nextIn(mask uint64, start, n int) int {
	for j := 0; j < n; j++ {
		i := (start + j) % n
		if mask&(1<<uint(i)) != 0 {
			return i
		}
	}
	return lowest(mask)
}
