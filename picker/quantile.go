package picker

import (
	"math"
	"sync/atomic"
	"time"
)

// The latency histogram behind Picker.Quantile: one per endpoint and
// request class, fed with the latency of every request that ended OK.
// Fixed log-scale buckets, four per doubling from histMin, so a bucket is
// about 19% wide (the answer is interpolated within it); latencies at or
// above histMin × 2^16 (about 4.2 s) count in the last bucket. Two windows
// of histWindow take turns, so a quantile covers the last 5 to 10 s.
const (
	histPerDoubling = 4
	histBuckets     = 64
	histMin         = int64(64 * time.Microsecond)
	histWindow      = int64(5 * time.Second)
	// histMinSamples is the fewest samples a quantile is given from:
	// below it Quantile reports nothing rather than a guess.
	histMinSamples = 16
)

// histSteps are the lower bounds of the buckets within one doubling.
var histSteps = [histPerDoubling]float64{1, math.Pow(2, 0.25), math.Pow(2, 0.5), math.Pow(2, 0.75)}

// histogram counts latencies in two alternating windows. Adding is two
// atomic adds and a load, plus, once a window, clearing the slot it reuses:
// only the buckets its occupancy mask names, which matters when an
// endpoint gets a sample every few seconds (a client among thousands), so
// that nearly every sample opens a window. A sample that races with the
// clearing may be lost, which a quantile can afford.
type histogram struct {
	win    [2]int64  // the window number each slot holds, plus 1; 0 = never used
	used   [2]uint64 // bit i: bucket i of the slot may be non-zero
	counts [2][histBuckets]uint32
}

// bucketOf is the bucket of a latency of v ns.
func bucketOf(v int64) int {
	if v < histMin {
		return 0
	}
	frac, exp := math.Frexp(float64(v) / float64(histMin)) // frac in [0.5, 1)
	i := (exp - 1) * histPerDoubling
	for k := histPerDoubling - 1; k > 0; k-- {
		if 2*frac >= histSteps[k] {
			i += k
			break
		}
	}
	if i >= histBuckets {
		i = histBuckets - 1
	}
	return i
}

// bucketLow is the lower bound of bucket i, in ns.
func bucketLow(i int) float64 {
	return float64(histMin) * math.Ldexp(histSteps[i%histPerDoubling], i/histPerDoubling)
}

// add counts a latency of v ns observed at now.
func (h *histogram) add(v, now int64) {
	w := now/histWindow + 1
	slot := w & 1
	if old := atomic.LoadInt64(&h.win[slot]); old < w && atomic.CompareAndSwapInt64(&h.win[slot], old, w) {
		for m, i := atomic.SwapUint64(&h.used[slot], 0), 0; m != 0; m, i = m>>1, i+1 {
			if m&1 != 0 {
				atomic.StoreUint32(&h.counts[slot][i], 0)
			}
		}
	}
	// Count first, then mark: a clearing that comes between loses the
	// sample but never leaves a count its mask does not name.
	i := bucketOf(v)
	atomic.AddUint32(&h.counts[slot][i], 1)
	for bit := uint64(1) << uint(i); ; {
		m := atomic.LoadUint64(&h.used[slot])
		if m&bit != 0 || atomic.CompareAndSwapUint64(&h.used[slot], m, m|bit) {
			return
		}
	}
}

// quantile is the q-quantile of the samples of the current and the
// previous window at now, and false when there are fewer than
// histMinSamples.
func (h *histogram) quantile(q float64, now int64) (time.Duration, bool) {
	w := now/histWindow + 1
	var c [histBuckets]uint64
	var total uint64
	for s := range h.win {
		if x := atomic.LoadInt64(&h.win[s]); x != w && x != w-1 {
			continue
		}
		for m, i := atomic.LoadUint64(&h.used[s]), 0; m != 0; m, i = m>>1, i+1 {
			if m&1 != 0 {
				n := uint64(atomic.LoadUint32(&h.counts[s][i]))
				c[i] += n
				total += n
			}
		}
	}
	if total < histMinSamples {
		return 0, false
	}
	rank := q * float64(total)
	var seen float64
	for i, n := range c {
		if n == 0 {
			continue
		}
		lo := bucketLow(i)
		if i == histBuckets-1 {
			return time.Duration(lo), true
		}
		if seen+float64(n) >= rank {
			f := (rank - seen) / float64(n)
			if f < 0 {
				f = 0
			}
			return time.Duration(lo + f*(bucketLow(i+1)-lo)), true
		}
		seen += float64(n)
	}
	return time.Duration(bucketLow(histBuckets - 1)), true // rounding: rank above the total
}

// Quantile returns the q-quantile (0 < q ≤ 1) of the latency of the
// requests of t's class that t's endpoint answered (Result OK) in the last
// 5 to 10 seconds, from a fixed log-scale histogram (buckets about 19% wide,
// from 64µs; anything from about 4.2s up counts as that). It reports false
// for a zero ticket, a q outside (0, 1], or fewer than 16 samples.
// Hedged reads use it as the delay after which a read with no answer from
// that member is sent to another (internal/sim's hedging, etcdbalance's
// hedged reads). It takes no lock and allocates nothing.
func (p *Picker) Quantile(t Ticket, q float64) (time.Duration, bool) {
	if t.e == nil || !(q > 0 && q <= 1) {
		return 0, false
	}
	return t.e.hist[t.class].quantile(q, p.now())
}
