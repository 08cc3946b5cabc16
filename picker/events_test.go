package picker

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// eventLog collects events, safe for concurrent use.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(ev Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

// take returns the events so far, without Picker, and forgets them.
func (l *eventLog) take() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.evs
	l.evs = nil
	for i := range out {
		out[i].Picker = nil
	}
	return out
}

func failTimes(t *testing.T, p *Picker, addr string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		tk, err := p.PickAddr(addr, Unary)
		require.NoError(t, err)
		p.Done(tk, Outcome{Result: Failed})
	}
}

// TestEventsEjectProbeRestore follows one endpoint through ejection, a
// failed probe, a longer ejection, a good probe and the end of its slow
// start, on an injected clock.
func TestEventsEjectProbeRestore(t *testing.T) {
	clk := newFakeClock()
	var log eventLog
	p := mustNew(t, Config{Clock: clk, Rand: NewSource(1), Events: log.add}, "a", "b", "c")
	require.Equal(t, []Event{{Kind: EventAdded, Addr: p.Endpoints()[0]}, {Kind: EventAdded, Addr: p.Endpoints()[1]}, {Kind: EventAdded, Addr: p.Endpoints()[2]}}, log.take())

	failTimes(t, p, "a", defaultEjectAfter-1)
	assert.Empty(t, log.take(), "no event before the ejection")
	failTimes(t, p, "a", 1)
	assert.Equal(t, []Event{{Kind: EventEjected, Addr: "a", Reason: ReasonFailures, Backoff: defaultEjectBase}}, log.take())

	// The probe goes when the backoff is over, and fails: a second,
	// longer ejection.
	clk.Advance(defaultEjectBase)
	tk, err := p.Pick(Request{})
	require.NoError(t, err)
	require.Equal(t, "a", tk.Addr())
	assert.Equal(t, []Event{{Kind: EventProbe, Addr: "a"}}, log.take())
	p.Done(tk, Outcome{Result: Failed})
	assert.Equal(t, []Event{{Kind: EventEjected, Addr: "a", Reason: ReasonProbeFailed, Backoff: 2 * defaultEjectBase}}, log.take())

	clk.Advance(2 * defaultEjectBase)
	tk, err = p.Pick(Request{})
	require.NoError(t, err)
	require.Equal(t, "a", tk.Addr())
	p.Done(tk, Outcome{})
	assert.Equal(t, []Event{{Kind: EventProbe, Addr: "a"}, {Kind: EventRestored, Addr: "a"}}, log.take())

	// Slow start ends with the first completion after its window.
	clk.Advance(defaultSlowStart - time.Millisecond)
	tk, _ = p.PickAddr("a", Unary)
	p.Done(tk, Outcome{})
	assert.Empty(t, log.take(), "slow start not over yet")
	clk.Advance(time.Millisecond)
	tk, _ = p.PickAddr("a", Unary)
	p.Done(tk, Outcome{})
	tk, _ = p.PickAddr("a", Unary)
	p.Done(tk, Outcome{})
	assert.Equal(t, []Event{{Kind: EventSlowStartEnded, Addr: "a"}}, log.take(), "reported once")
}

// TestEventsNoEjectionOfTheLast: the engine never ejects the last
// endpoint in rotation, and so reports no ejection for it.
func TestEventsNoEjectionOfTheLast(t *testing.T) {
	var log eventLog
	p := mustNew(t, Config{Clock: newFakeClock(), Rand: NewSource(1), Events: log.add}, "a")
	log.take()
	failTimes(t, p, "a", 3*defaultEjectAfter)
	assert.Empty(t, log.take())
}

func TestEventsEndpointSet(t *testing.T) {
	var log eventLog
	p := mustNew(t, Config{Clock: newFakeClock(), Rand: NewSource(1), Events: log.add}, "a", "b")
	log.take()
	require.NoError(t, p.SetEndpoints([]string{"b", "c"}))
	assert.Equal(t, []Event{{Kind: EventAdded, Addr: "c"}, {Kind: EventRemoved, Addr: "a"}}, log.take())
	require.NoError(t, p.SetEndpoints([]string{"c", "b"}))
	assert.Empty(t, log.take(), "same set, new order")

	// A new endpoint joining a set starts in slow start, which ends.
	clk := newFakeClock()
	p = mustNew(t, Config{Clock: clk, Rand: NewSource(1), Events: log.add}, "a")
	require.NoError(t, p.SetEndpoints([]string{"a", "b"}))
	log.take()
	clk.Advance(defaultSlowStart)
	tk, _ := p.PickAddr("b", Unary)
	p.Done(tk, Outcome{})
	assert.Equal(t, []Event{{Kind: EventSlowStartEnded, Addr: "b"}}, log.take())
}

func TestEmit(t *testing.T) {
	var got []Event
	p, err := New(Config{Events: func(ev Event) { got = append(got, ev) }})
	require.NoError(t, err)
	p.Emit(Event{Kind: EventLeaderChanged, Addr: "a"})
	require.Len(t, got, 1)
	assert.Same(t, p, got[0].Picker, "the engine names itself")
	assert.Equal(t, "leader-changed a", got[0].String())

	quiet, err := New(Config{})
	require.NoError(t, err)
	quiet.Emit(Event{Kind: EventLeaderChanged}) // no callback: nothing happens

	ev := Event{Kind: EventEjected, Addr: "a", Reason: ReasonFailures, Backoff: time.Second, Lag: 3, Err: errors.New("boom")}
	assert.Equal(t, "ejected a reason=failures backoff=1s lag=3 err=boom", ev.String())
	assert.Equal(t, "EventKind(99)", EventKind(99).String())
	for k := range kindNames {
		assert.NotContains(t, k.String(), "EventKind", "every kind has a name")
	}
}

// TestEventsNoAllocs: picking and completing allocate nothing, with or
// without a callback (an Event is a value).
func TestEventsNoAllocs(t *testing.T) {
	for _, cb := range []func(Event){nil, func(Event) {}} {
		clk := newFakeClock()
		p := mustNew(t, Config{Clock: clk, Rand: NewSource(1), Events: cb, ReshuffleInterval: -1}, "a", "b", "c")
		allocs := testing.AllocsPerRun(200, func() {
			failTimes(t, p, "a", defaultEjectAfter) // ejects a
			clk.Advance(time.Minute)
			tk, _ := p.Pick(Request{}) // a's probe
			p.Done(tk, Outcome{})      // restores a
		})
		assert.Zero(t, allocs, "callback set: %v", cb != nil)
	}
}

func TestClassPicks(t *testing.T) {
	p := mustNew(t, Config{Clock: newFakeClock(), Rand: NewSource(1)}, "a")
	for _, r := range []Request{{Class: ClassRange}, {Class: ClassWrite}, {Class: ClassWrite}, {Kind: Stream}} {
		tk, err := p.Pick(r)
		require.NoError(t, err)
		p.Done(tk, Outcome{})
	}
	s := statsOf(t, p, "a")
	assert.Equal(t, [3]int64{0, 1, 2}, s.ClassPicks)
	assert.EqualValues(t, 4, s.Picks)
	assert.Equal(t, "write", ClassWrite.String())
	assert.Equal(t, "Class(7)", Class(7).String())
}
