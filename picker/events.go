package picker

import (
	"fmt"
	"sync/atomic"
	"time"
)

// EventKind says what happened in an Event. The engine reports the first
// group; the adapters (package etcdbalance, package v2compat, the legacy
// balancer) report the others through Picker.Emit, so that one callback
// and one metrics collector serve them all.
type EventKind uint8

// Engine events.
const (
	// EventEjected: the endpoint left rotation. Reason is ReasonFailures
	// (Config.EjectAfter blamed failures in a row) or ReasonProbeFailed;
	// Backoff is how long until its probe may go.
	EventEjected EventKind = iota + 1
	// EventProbe: the single probe after an ejection was sent.
	EventProbe
	// EventRestored: the probe (or any request) succeeded, so the endpoint
	// is back in rotation, in slow start.
	EventRestored
	// EventSlowStartEnded: the endpoint's slow start is over. Reported by
	// the first request to complete after the window ended.
	EventSlowStartEnded
	// EventAdded and EventRemoved: the endpoint set changed
	// (SetEndpoints), one event per endpoint.
	EventAdded
	EventRemoved
)

// Adapter events.
const (
	// EventLeaderChanged: Addr leads now (a leader was found for the first
	// time, or another member took over). A round that finds no leader
	// reports nothing, so one election gives one event.
	EventLeaderChanged EventKind = iota + 20
	// EventLearnerSeen and EventLearnerPromoted: the member was found to
	// be a learner, or a learner found to be a voter now.
	EventLearnerSeen
	EventLearnerPromoted
	// EventLagging and EventCaughtUp: the member's applied index trails the
	// most advanced member's by more than the lag threshold (Lag entries),
	// or no longer does.
	EventLagging
	EventCaughtUp
	// EventViewRound: the cluster view finished a probe round (Addr "").
	EventViewRound
	// EventViewAnswer: a member answered a view probe; Lag is how far its
	// applied index trails the round's most advanced one. For metrics;
	// not logged.
	EventViewAnswer
	// EventViewProbeFailed: a view probe of the member failed; Reason is
	// the status code, Err the error.
	EventViewProbeFailed
	// EventGuardReissue: the monotonic guard dropped a read the member
	// answered below a revision already seen and sent it again; Reason
	// says where (ReissueElsewhere, ReissueLeader, ReissueLinearizable).
	EventGuardReissue
	// EventMarkedDown: a v2 member failed a request and is avoided for a
	// while (see package v2compat); reported once until it answers well.
	EventMarkedDown
	// EventMarkedStale: a v2 member answered behind too often and gets no
	// reads for a while; reported once until it answers a fresh read.
	EventMarkedStale
)

// Reasons, for Event.Reason. They are fixed strings, so that they can be
// metric labels.
const (
	ReasonFailures    = "failures"
	ReasonProbeFailed = "probe-failed"

	ReissueElsewhere    = "elsewhere"
	ReissueLeader       = "leader"
	ReissueLinearizable = "linearizable"
)

var kindNames = map[EventKind]string{
	EventEjected:         "ejected",
	EventProbe:           "probe",
	EventRestored:        "restored",
	EventSlowStartEnded:  "slow-start-ended",
	EventAdded:           "added",
	EventRemoved:         "removed",
	EventLeaderChanged:   "leader-changed",
	EventLearnerSeen:     "learner-seen",
	EventLearnerPromoted: "learner-promoted",
	EventLagging:         "lagging",
	EventCaughtUp:        "caught-up",
	EventViewRound:       "view-round",
	EventViewAnswer:      "view-answer",
	EventViewProbeFailed: "view-probe-failed",
	EventGuardReissue:    "guard-reissue",
	EventMarkedDown:      "marked-down",
	EventMarkedStale:     "marked-stale",
}

func (k EventKind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is one state change, handed to Config.Events. It is a small value:
// building one allocates nothing.
type Event struct {
	Kind EventKind
	// Addr is the endpoint concerned; "" for events about none
	// (EventViewRound).
	Addr string
	// Reason is a fixed string (see the Reason and Reissue constants; the
	// status code for EventViewProbeFailed), never a payload.
	Reason string
	// Backoff is how long an ejection lasts (EventEjected).
	Backoff time.Duration
	// Lag is in raft entries (EventLagging, EventCaughtUp, EventViewAnswer).
	Lag int64
	// Err is the failure behind the event, when there is one.
	Err error
	// Picker is the engine that reports the event, so that a metrics
	// collector fed with events can read its Snapshot.
	Picker *Picker
}

func (ev Event) String() string {
	s := ev.Kind.String()
	if ev.Addr != "" {
		s += " " + ev.Addr
	}
	if ev.Reason != "" {
		s += " reason=" + ev.Reason
	}
	if ev.Backoff != 0 {
		s += " backoff=" + ev.Backoff.String()
	}
	if ev.Lag != 0 {
		s += fmt.Sprintf(" lag=%d", ev.Lag)
	}
	if ev.Err != nil {
		s += " err=" + ev.Err.Error()
	}
	return s
}

// Emit hands ev to Config.Events, with ev.Picker set to p; it does nothing
// when no callback is set. The engine calls it for its own events; the
// adapters call it for theirs, so that their users need one callback.
// The callback runs on the caller's goroutine, which holds nothing a pick
// needs: Pick, Done and SetEndpoints call it after their atomic updates.
func (p *Picker) Emit(ev Event) {
	if p.events == nil {
		return
	}
	ev.Picker = p
	p.events(ev)
}

// endSlowStart clears e's slow start once its window is over (the cost
// ignores it from then on anyway) and reports that, once.
func (p *Picker) endSlowStart(e *endpoint, now int64) {
	if p.s.slowStart == 0 {
		return
	}
	since := atomic.LoadInt64(&e.slowSince)
	if since == 0 || now-since < p.s.slowStart {
		return
	}
	if atomic.CompareAndSwapInt64(&e.slowSince, since, 0) {
		p.Emit(Event{Kind: EventSlowStartEnded, Addr: e.addr})
	}
}

func (c Class) String() string {
	switch c {
	case ClassPoint:
		return "point"
	case ClassRange:
		return "range"
	case ClassWrite:
		return "write"
	}
	return fmt.Sprintf("Class(%d)", uint8(c))
}

// probe issues the single probe to an ejected endpoint, and reports it.
func (p *Picker) probe(e *endpoint, now int64, k Kind, c Class) Ticket {
	t := p.issue(e, now, k, c, true)
	p.Emit(Event{Kind: EventProbe, Addr: e.addr})
	return t
}

// emitSetChange reports the endpoints that SetEndpoints added and removed.
func (p *Picker) emitSetChange(old, cur []*endpoint) {
	if p.events == nil {
		return
	}
	for _, e := range cur {
		if !containsEndpoint(old, e) {
			p.Emit(Event{Kind: EventAdded, Addr: e.addr})
		}
	}
	for _, e := range old {
		if !containsEndpoint(cur, e) {
			p.Emit(Event{Kind: EventRemoved, Addr: e.addr})
		}
	}
}

func containsEndpoint(eps []*endpoint, e *endpoint) bool {
	for _, o := range eps {
		if o == e {
			return true
		}
	}
	return false
}
