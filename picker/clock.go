package picker

import (
	"sync/atomic"
	"time"
)

// Clock tells the time. Tests and simulations inject a fake one.
type Clock interface {
	Now() time.Time
}

// systemClock is the wall clock, the default Clock.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Source supplies uniformly distributed random 64-bit values. It must be
// safe for concurrent use; the pick path calls it without a lock.
type Source interface {
	Uint64() uint64
}

// NewSource returns a lock-free, deterministic Source (SplitMix64 over an
// atomic counter): the same seed gives the same sequence when used from one
// goroutine.
func NewSource(seed uint64) Source {
	return &splitMix{state: seed}
}

type splitMix struct {
	state uint64
}

func (s *splitMix) Uint64() uint64 {
	z := atomic.AddUint64(&s.state, 0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// defaultSource serves Jitter calls that bring no Source.
var defaultSource = NewSource(uint64(time.Now().UnixNano()))

// Jitter spreads d uniformly over d×(1±frac), drawing from r (a
// process-wide Source when nil), so that clients started together do not
// act in step. frac is clamped to [0, 1]. The engine's reshuffle, the
// cluster view's probe interval (package etcdbalance) and the leader poll
// (package v2compat) use it.
func Jitter(d time.Duration, frac float64, r Source) time.Duration {
	if !(frac > 0) {
		return d
	}
	if frac > 1 {
		frac = 1
	}
	if r == nil {
		r = defaultSource
	}
	u := float64(r.Uint64()>>11) / (1 << 53) // uniform in [0, 1)
	return time.Duration(float64(d) * (1 + frac*(2*u-1)))
}

// raiseTo raises *addr to v unless it is already at least v, and returns
// the value it leaves there.
func raiseTo(addr *int64, v int64) int64 {
	for {
		cur := atomic.LoadInt64(addr)
		if cur >= v || atomic.CompareAndSwapInt64(addr, cur, v) {
			if cur > v {
				return cur
			}
			return v
		}
	}
}

// lowerTo lowers *addr to v unless it is already at most v; 0 in *addr
// means "none" and is always replaced.
func lowerTo(addr *int64, v int64) {
	for {
		cur := atomic.LoadInt64(addr)
		if (cur != 0 && cur <= v) || atomic.CompareAndSwapInt64(addr, cur, v) {
			return
		}
	}
}

// updateBits sets and clears bits of *addr in one atomic step.
func updateBits(addr *uint32, set, clear uint32) {
	for {
		old := atomic.LoadUint32(addr)
		nv := (old | set) &^ clear
		if old == nv || atomic.CompareAndSwapUint32(addr, old, nv) {
			return
		}
	}
}
