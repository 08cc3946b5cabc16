package picker

import (
	"sync/atomic"
	"time"
)

// Clock tells the time. Tests and simulations inject a fake one.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the wall clock.
var SystemClock Clock = systemClock{}

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
