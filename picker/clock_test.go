package picker

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The engine's time never goes back and never reaches the "none" value 0,
// even when the clock steps back before the first reading.
func TestNowMonotonicUnderSteps(t *testing.T) {
	fc := newFakeClock()
	p := mustNew(t, Config{Clock: fc, Rand: NewSource(1)}, "a")
	fc.Advance(-time.Hour) // before anything has read the clock since New
	prev := p.Now()
	require.True(t, prev > 0, "Now() = %v", prev)
	for _, d := range []time.Duration{time.Millisecond, -time.Hour, 0, time.Hour, -time.Microsecond, -2 * time.Hour, time.Second} {
		fc.Advance(d)
		now := p.Now()
		assert.True(t, now >= prev, "after a step of %v: Now() went from %v back to %v", d, prev, now)
		prev = now
	}
}

// A step back smaller than stepTolerance holds time still; a larger one
// jumps it forward by at least a minute.
func TestStepBackJumpsForward(t *testing.T) {
	fc := newFakeClock()
	p := mustNew(t, Config{Clock: fc, Rand: NewSource(1)}, "a")
	fc.Advance(time.Second)
	t0 := p.Now()
	fc.Advance(-time.Duration(stepTolerance) / 2)
	assert.Equal(t, t0, p.Now(), "jitter below the tolerance")
	fc.Advance(-time.Hour)
	t1 := p.Now()
	assert.True(t, t1-t0 >= minStepJump, "a step back of an hour moved the engine by %v", t1-t0)
	fc.Advance(time.Second)
	assert.Equal(t, t1+time.Second, p.Now(), "after the jump the engine follows the clock again")
}

// An ejection never lasts longer than configured, whichever way the clock
// steps while it is in force: the probe goes at once after a step either
// way (without the jump, a step back of an hour would have held the member
// out for an hour and a second).
func TestEjectionBoundedUnderSteps(t *testing.T) {
	for _, step := range []time.Duration{-time.Hour, time.Hour} {
		t.Run(step.String(), func(t *testing.T) {
			fc := newFakeClock()
			p := mustNew(t, Config{Clock: fc, Rand: NewSource(2), EjectAfter: 2, EjectMax: 10 * time.Second}, "a", "b")
			for i := 0; i < 2; i++ {
				tk, err := p.PickAddr("a", Unary)
				require.NoError(t, err)
				p.Done(tk, Outcome{Result: Failed})
			}
			st := statsOf(t, p, "a")
			require.True(t, st.Ejected)
			assert.False(t, st.EjectedUntil.After(fc.Now().Add(10*time.Second)), "ejected until %v", st.EjectedUntil)
			for i := 0; i < 20; i++ {
				tk, err := p.Pick(Request{})
				require.NoError(t, err)
				require.Equal(t, "b", tk.Addr(), "an ejected member was picked")
				p.Done(tk, Outcome{})
			}

			fc.Advance(step)
			tk, err := p.Pick(Request{})
			require.NoError(t, err)
			assert.Equal(t, "a", tk.Addr())
			assert.True(t, tk.probe, "the probe did not go after a step of %v", step)
			p.Done(tk, Outcome{})
			assert.False(t, statsOf(t, p, "a").Ejected)
		})
	}
}

// A request in flight across a step gives no negative, zero or
// hour-long sample: across a step back it gives none; across a step
// forward it is clamped to maxSample.
func TestSamplesAcrossSteps(t *testing.T) {
	fc := newFakeClock()
	p := mustNew(t, Config{Clock: fc, Rand: NewSource(3)}, "a", "b")
	for i := 0; i < 20; i++ { // both measured at 10ms
		for _, a := range []string{"a", "b"} {
			tk, err := p.PickAddr(a, Unary)
			require.NoError(t, err)
			fc.Advance(10 * time.Millisecond)
			p.Done(tk, Outcome{})
		}
	}
	before := statsOf(t, p, "a").Estimate
	require.InDelta(t, float64(10*time.Millisecond), float64(before), float64(time.Millisecond))

	tk, err := p.PickAddr("a", Unary)
	require.NoError(t, err)
	fc.Advance(-time.Hour)
	p.Done(tk, Outcome{})
	// Without the jump this was a sample of -1h clamped to 1ns: "a" would
	// have looked free and taken every request.
	assert.Equal(t, before, statsOf(t, p, "a").Estimate, "a request across a step back changed the estimate")

	tk, err = p.PickAddr("b", Unary)
	require.NoError(t, err)
	fc.Advance(time.Hour)
	p.Done(tk, Outcome{Result: Failed}) // charged in full, past PeakStep
	got := statsOf(t, p, "b").Estimate
	assert.True(t, got > 0 && got <= time.Duration(maxSample), "estimate %v after a failure across a step forward", got)
}

// A run with steps of an hour both ways in the middle: every pick is
// still served, ejections and estimates stay within their bounds, and the
// slow member keeps losing to the fast one.
func TestRunWithClockSteps(t *testing.T) {
	fc := newFakeClock()
	p := mustNew(t, Config{Clock: fc, Rand: NewSource(4)}, five...)
	lat := map[string]time.Duration{"a": 50 * time.Millisecond, "b": time.Millisecond, "c": time.Millisecond, "d": time.Millisecond, "e": time.Millisecond}
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		switch i {
		case 1000:
			fc.Advance(-time.Hour)
		case 2000:
			fc.Advance(time.Hour)
		}
		tk, err := p.Pick(Request{})
		require.NoError(t, err)
		fc.Advance(lat[tk.Addr()])
		p.Done(tk, Outcome{})
		if i >= 2100 {
			counts[tk.Addr()]++
		}
	}
	for _, s := range p.Snapshot() {
		assert.True(t, s.Estimate > 0 && s.Estimate <= time.Duration(maxSample), "%s: estimate %v", s.Addr, s.Estimate)
		assert.False(t, s.Ejected, "%s ejected", s.Addr)
	}
	for _, a := range []string{"b", "c", "d", "e"} {
		assert.True(t, counts["a"] < counts[a], "the slow member took %d picks, %s %d", counts["a"], a, counts[a])
	}
}

// TestRaiseLower: from many goroutines, raiseTo leaves the largest value
// and lowerTo the smallest, 0 counting as "none".
func TestRaiseLower(t *testing.T) {
	var hi, lo int64
	var wg sync.WaitGroup
	for g := int64(1); g <= 8; g++ {
		wg.Add(1)
		go func(g int64) {
			defer wg.Done()
			for i := int64(0); i < 1000; i++ {
				v := g*1000 + i
				assert.GreaterOrEqual(t, raiseTo(&hi, v), v)
				lowerTo(&lo, v)
			}
		}(g)
	}
	wg.Wait()
	assert.EqualValues(t, 8999, hi)
	assert.EqualValues(t, 1000, lo)
	assert.EqualValues(t, 8999, raiseTo(&hi, 5), "raiseTo returns what it leaves")
}
