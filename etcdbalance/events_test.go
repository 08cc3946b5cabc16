package etcdbalance

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

type events struct {
	mu  sync.Mutex
	evs []picker.Event
}

func (e *events) add(ev picker.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}

// take returns the events other than answers and rounds, as strings.
func (e *events) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.evs {
		if ev.Kind != picker.EventViewAnswer && ev.Kind != picker.EventViewRound && ev.Kind != picker.EventAdded {
			ev.Err = nil
			out = append(out, ev.String())
		}
	}
	e.evs = nil
	return out
}

// TestViewEvents: the view reports a leader change once per new leader
// (an election's leaderless rounds report nothing), learners seen and
// promoted, members lagging and caught up, and failed probes.
func TestViewEvents(t *testing.T) {
	var got events
	eng, err := picker.New(picker.Config{Events: got.add})
	require.NoError(t, err)
	require.NoError(t, eng.SetEndpoints([]string{"a", "b", "c", "d"}))
	set := defaultRouting()
	v := &view{rt: newRouter(set, eng), engine: eng, members: map[string]*memberState{}}
	round := func(answers map[string]*pb.StatusResponse) {
		var results []probeResult
		for _, a := range []string{"a", "b", "c", "d"} {
			if v.members[a] == nil {
				v.members[a] = &memberState{}
			}
			if s := answers[a]; s != nil {
				results = append(results, probeResult{addr: a, resp: s})
			} else {
				results = append(results, probeResult{addr: a, err: status.Error(codes.Unavailable, "down")})
			}
		}
		v.apply(eng.Snapshot(), results)
		v.roundDone()
	}
	learner := func(s *pb.StatusResponse) *pb.StatusResponse { s.IsLearner = true; return s }
	lag := set.lagThreshold + 1

	round(map[string]*pb.StatusResponse{"a": statusOf(1, 2, 1, 100), "b": statusOf(2, 2, 1, 100), "c": statusOf(3, 2, 1, 100), "d": learner(statusOf(4, 2, 1, 100))})
	// Members are tagged in map order.
	assert.ElementsMatch(t, []string{"leader-changed a", "learner-seen d"}, got.take())
	round(map[string]*pb.StatusResponse{"a": statusOf(1, 2, 1, 100), "b": statusOf(2, 2, 1, 100), "c": statusOf(3, 2, 1, 100), "d": learner(statusOf(4, 2, 1, 100))})
	assert.Empty(t, got.take(), "nothing changed")

	// An election: a leaderless round, then b leads; c falls behind.
	round(map[string]*pb.StatusResponse{"b": statusOf(2, 3, 0, 100), "c": statusOf(3, 3, 0, 100), "d": learner(statusOf(4, 3, 0, 100))})
	assert.Equal(t, []string{"view-probe-failed a reason=Unavailable"}, got.take())
	round(map[string]*pb.StatusResponse{"b": statusOf(2, 3, 2, 100+lag), "c": statusOf(3, 3, 2, 100), "d": statusOf(4, 3, 2, 100+lag)})
	assert.ElementsMatch(t, []string{
		"view-probe-failed a reason=Unavailable",
		"leader-changed b",
		"lagging c lag=" + strconv.FormatUint(lag, 10),
		"learner-promoted d",
	}, got.take())
	round(map[string]*pb.StatusResponse{"a": statusOf(1, 3, 2, 200+lag), "b": statusOf(2, 3, 2, 200+lag), "c": statusOf(3, 3, 2, 200+lag), "d": statusOf(4, 3, 2, 200+lag)})
	assert.Equal(t, []string{"caught-up c"}, got.take())
}

// TestEventLog: levels, fields and the rate limit of the log lines.
func TestEventLog(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	now := time.Unix(1e9, 0)
	var user []picker.Event
	eng, sink, err := newEngine(picker.Config{Events: func(ev picker.Event) { user = append(user, ev) }})
	require.NoError(t, err)
	eng.Emit(picker.Event{Kind: picker.EventLeaderChanged, Addr: "a"}) // no logger yet
	require.Len(t, user, 1, "the user's callback runs")
	require.Zero(t, logs.Len())
	sink.use(zap.New(core))
	// A logger of its own with an injected clock, for the rate limit.
	l := &eventLog{log: zap.New(core).Named("etcdbalance"), now: func() time.Time { return now }, last: map[logKey]*logState{}}

	eng.Emit(picker.Event{Kind: picker.EventLeaderChanged, Addr: "a"})
	require.Len(t, user, 2, "the user's callback still runs")
	require.Equal(t, 1, logs.Len())
	e := logs.TakeAll()[0]
	assert.Equal(t, "leader changed", e.Message)
	assert.Equal(t, zapcore.InfoLevel, e.Level)
	assert.Equal(t, map[string]any{"leader": "a"}, e.ContextMap())

	eject := picker.Event{Kind: picker.EventEjected, Addr: "b", Reason: picker.ReasonFailures, Backoff: time.Second}
	for i := 0; i < 3; i++ {
		l.write(eject)
	}
	l.write(picker.Event{Kind: picker.EventViewRound})
	l.write(picker.Event{Kind: picker.EventViewAnswer, Addr: "b", Lag: 3})
	now = now.Add(logEvery)
	l.write(eject)
	l.write(picker.Event{Kind: picker.EventViewProbeFailed, Addr: "c", Reason: "Unavailable", Err: status.Error(codes.Unavailable, "connection refused")})
	l.write(picker.Event{Kind: picker.EventViewProbeFailed, Addr: "d", Err: errors.New("plain")})
	all := logs.TakeAll()
	require.Len(t, all, 4, "two ejections within logEvery dropped; rounds and answers not logged")
	assert.Equal(t, zapcore.WarnLevel, all[0].Level)
	assert.Equal(t, map[string]any{"member": "b", "reason": "failures", "backoff": time.Second}, all[0].ContextMap())
	assert.Equal(t, map[string]any{"member": "b", "reason": "failures", "backoff": time.Second, "suppressed": int64(2)}, all[1].ContextMap())
	assert.Equal(t, map[string]any{"member": "c", "reason": "Unavailable", "error": "connection refused"}, all[2].ContextMap())
	assert.Equal(t, "plain", all[3].ContextMap()["error"])

}
