package etcdbalance

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/status"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Events: the engine reports ejections, probes and the rest through
// picker.Config.Events (set it with WithPickerConfig); this file adds the
// cluster view's and the monotonic guard's events to the same callback,
// and the log lines New writes through clientv3.Config.Logger.

// logEvery is the least time between two log lines of the same kind about
// the same member; the lines dropped in between are counted in the next
// one's "suppressed" field.
const logEvery = 10 * time.Second

// eventLog writes events to a zap logger: state changes at Info,
// failures at Warn, each kind and member at most once per logEvery. It
// logs addresses, reasons, durations and error texts, never a request or
// a credential.
type eventLog struct {
	log *zap.Logger
	now func() time.Time

	mu   sync.Mutex // guards last
	last map[logKey]*logState
}

type logKey struct {
	kind picker.EventKind
	addr string
}

type logState struct {
	at         time.Time
	suppressed int
}

// logSink is where an entry's engine sends its events: the log, once a
// logger is known (New: clientv3.Config.Logger; Attach: the client's
// logger), and the user's callback.
type logSink struct {
	log atomic.Pointer[eventLog]
}

// newEngine returns an engine for cfg whose events go through a new sink.
func newEngine(cfg picker.Config) (*picker.Picker, *logSink, error) {
	s := &logSink{}
	user := cfg.Events
	cfg.Events = func(ev picker.Event) {
		if l := s.log.Load(); l != nil {
			l.write(ev)
		}
		if user != nil {
			user(ev)
		}
	}
	eng, err := picker.New(cfg)
	return eng, s, err
}

// use starts logging through l, unless l is nil or a logger is in use.
func (s *logSink) use(l *zap.Logger) {
	if l != nil {
		s.log.CompareAndSwap(nil, &eventLog{log: l.Named("etcdbalance"), now: time.Now, last: map[logKey]*logState{}})
	}
}

// write logs ev, unless its kind is not logged or it is rate-limited.
func (el *eventLog) write(ev picker.Event) {
	var lvl zapcore.Level
	var msg string
	switch ev.Kind {
	case picker.EventEjected:
		lvl, msg = zapcore.WarnLevel, "member ejected"
	case picker.EventProbe:
		lvl, msg = zapcore.InfoLevel, "probing ejected member"
	case picker.EventRestored:
		lvl, msg = zapcore.InfoLevel, "member restored"
	case picker.EventSlowStartEnded:
		lvl, msg = zapcore.InfoLevel, "member slow start ended"
	case picker.EventAdded:
		lvl, msg = zapcore.InfoLevel, "member added"
	case picker.EventRemoved:
		lvl, msg = zapcore.InfoLevel, "member removed"
	case picker.EventLeaderChanged:
		lvl, msg = zapcore.InfoLevel, "leader changed"
	case picker.EventLearnerSeen:
		lvl, msg = zapcore.InfoLevel, "member is a learner"
	case picker.EventLearnerPromoted:
		lvl, msg = zapcore.InfoLevel, "learner promoted"
	case picker.EventLagging:
		lvl, msg = zapcore.WarnLevel, "member lagging"
	case picker.EventCaughtUp:
		lvl, msg = zapcore.InfoLevel, "member caught up"
	case picker.EventViewProbeFailed:
		lvl, msg = zapcore.WarnLevel, "cluster view probe failed"
	case picker.EventGuardReissue:
		lvl, msg = zapcore.InfoLevel, "stale read re-issued"
	default:
		return // rounds and answers: for metrics
	}
	if !el.log.Core().Enabled(lvl) {
		return
	}
	suppressed, ok := el.allow(logKey{ev.Kind, ev.Addr})
	if !ok {
		return
	}
	fields := make([]zap.Field, 0, 6)
	if ev.Kind == picker.EventLeaderChanged {
		fields = append(fields, zap.String("leader", ev.Addr))
	} else if ev.Addr != "" {
		fields = append(fields, zap.String("member", ev.Addr))
	}
	if ev.Reason != "" {
		fields = append(fields, zap.String("reason", ev.Reason))
	}
	if ev.Backoff != 0 {
		fields = append(fields, zap.Duration("backoff", ev.Backoff))
	}
	if ev.Kind == picker.EventLagging || ev.Kind == picker.EventCaughtUp {
		fields = append(fields, zap.Int64("lag", ev.Lag))
	}
	if ev.Err != nil {
		// The status message only: it names the failure, not the call.
		fields = append(fields, zap.String("error", status.Convert(ev.Err).Message()))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Int("suppressed", suppressed))
	}
	if ce := el.log.Check(lvl, msg); ce != nil {
		ce.Write(fields...)
	}
}

// allow reports whether a line for k may be written now, and how many were
// dropped since the last one.
func (el *eventLog) allow(k logKey) (suppressed int, ok bool) {
	now := el.now()
	el.mu.Lock()
	defer el.mu.Unlock()
	s := el.last[k]
	if s == nil {
		el.last[k] = &logState{at: now}
		return 0, true
	}
	if now.Sub(s.at) < logEvery {
		s.suppressed++
		return 0, false
	}
	n := s.suppressed
	s.at, s.suppressed = now, 0
	return n, true
}

// reissued reports that the guard sent a read again, to where, that the
// member at remote address answered below the floor.
func (e *entry) reissued(answered, to string) {
	if v := e.view.Load(); v != nil {
		if m := v.memberAt(answered); m != "" {
			answered = m
		}
	}
	e.engine.Emit(picker.Event{Kind: picker.EventGuardReissue, Addr: answered, Reason: to})
}

// event queues an event of the view, to be emitted by flush once v.mu is
// released: the callback must not run under a lock the request path takes
// (expireBehind). v.mu must be held.
func (v *view) event(ev picker.Event) {
	v.pending = append(v.pending, ev)
}

// roundDone emits the events of a round once it is applied.
func (v *view) roundDone() {
	v.flush()
	v.engine.Emit(picker.Event{Kind: picker.EventViewRound})
}

// flush emits the queued events.
func (v *view) flush() {
	v.mu.Lock()
	evs := v.pending
	v.pending = nil
	v.mu.Unlock()
	for _, ev := range evs {
		v.engine.Emit(ev)
	}
}

// noteTagsLocked queues the events of a member's new view state: leader
// changed (only for a leader other than the last one, so that an election
// whose rounds find no leader for a while gives one event), learner seen
// or promoted, lagging or caught up. v.mu must be held.
func (v *view) noteTagsLocked(addr string, m *memberState, set picker.Tags) {
	if set&tagLeader != 0 && addr != v.lastLeader {
		v.lastLeader = addr
		v.event(picker.Event{Kind: picker.EventLeaderChanged, Addr: addr})
	}
	if m.verified && m.learner != m.saidLearner {
		kind := picker.EventLearnerSeen
		if !m.learner {
			kind = picker.EventLearnerPromoted
		}
		m.saidLearner = m.learner
		v.event(picker.Event{Kind: kind, Addr: addr})
	}
	if m.lagging != m.saidLagging {
		kind := picker.EventLagging
		if !m.lagging {
			kind = picker.EventCaughtUp
		}
		m.saidLagging = m.lagging
		v.event(picker.Event{Kind: kind, Addr: addr, Lag: int64(m.lag)})
	}
}

// probeEventLocked queues the event of one probe's answer or failure.
func (v *view) probeEventLocked(r probeResult, lag uint64) {
	if r.err != nil {
		v.event(picker.Event{Kind: picker.EventViewProbeFailed, Addr: r.addr, Reason: status.Code(r.err).String(), Err: r.err})
		return
	}
	v.event(picker.Event{Kind: picker.EventViewAnswer, Addr: r.addr, Lag: int64(lag)})
}

// Where the guard re-issues a read, for reissued.
const (
	reissueElsewhere    = picker.ReissueElsewhere
	reissueLeader       = picker.ReissueLeader
	reissueLinearizable = picker.ReissueLinearizable
)
