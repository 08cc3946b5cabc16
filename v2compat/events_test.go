package v2compat

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

type eventRecorder struct {
	mu  sync.Mutex
	evs []string
}

func (r *eventRecorder) add(ev picker.Event) {
	if ev.Kind == picker.EventAdded || ev.Kind == picker.EventRemoved {
		return
	}
	r.mu.Lock()
	r.evs = append(r.evs, ev.Kind.String()+" "+ev.Addr)
	r.mu.Unlock()
}

func (r *eventRecorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.evs...)
}

// TestLeaderEvents: one event per new leader; an election that leaves the
// leader unknown for a while adds none.
func TestLeaderEvents(t *testing.T) {
	c := newFakeCluster(t, 3)
	c.setLeader(2)
	var rec eventRecorder
	tr, _ := newTestTransport(t, c, WithLeaderPollInterval(20*time.Millisecond), WithPickerConfig(picker.Config{Events: rec.add}))
	key := func(i int) string { return strings.ToLower(c.members[i].srv.URL) }
	waitFor(t, "leader m2", func() bool { return tr.Stats().Leader == c.members[2].srv.URL })
	c.setLeader(-1)
	waitFor(t, "no leader", func() bool { return tr.Stats().Leader == "" })
	c.setLeader(2)
	waitFor(t, "leader m2 again", func() bool { return tr.Stats().Leader == c.members[2].srv.URL })
	c.setLeader(0)
	waitFor(t, "leader m0", func() bool { return tr.Stats().Leader == c.members[0].srv.URL })
	var leaders []string
	for _, e := range rec.get() {
		if strings.HasPrefix(e, "leader-changed") { // the leaderless polls' 503s mark members down too
			leaders = append(leaders, e)
		}
	}
	assert.Equal(t, []string{"leader-changed " + key(2), "leader-changed " + key(0)}, leaders)
}

// TestMarkEvents: a failed request marks its member down; answers behind
// the highest index seen, several in a row, mark it stale once.
func TestMarkEvents(t *testing.T) {
	c := newFakeCluster(t, 1)
	var rec eventRecorder
	tr, _ := newTestTransport(t, c, WithLeaderPollInterval(-1), WithPickerConfig(picker.Config{Events: rec.add}))
	m := c.members[0]
	base := m.srv.URL
	key := strings.ToLower(base)

	m.handler.Store(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"message":"no leader"}`, http.StatusServiceUnavailable)
	}))
	require.Equal(t, 503, do(t, tr, "GET", base+"/v2/keys/a").StatusCode)
	m.handler.Store(http.HandlerFunc(nil))
	assert.Equal(t, []string{"marked-down " + key}, rec.get())

	// Stale: a member of three answers reads at a frozen index.
	c3 := newFakeCluster(t, 3)
	var rec3 eventRecorder
	tr3, _ := newTestTransport(t, c3, WithLeaderPollInterval(-1), WithPickerConfig(picker.Config{Policy: picker.RoundRobin, Events: rec3.add}))
	c3.members[2].freeze()
	do(t, tr3, "PUT", c3.members[0].srv.URL+"/v2/keys/a") // the index moves past the frozen one
	for i := 0; i < 60; i++ {
		do(t, tr3, "GET", c3.members[0].srv.URL+"/v2/keys/a")
	}
	assert.Equal(t, []string{"marked-stale " + strings.ToLower(c3.members[2].srv.URL)}, rec3.get())
}

// TestEndpointEvents: the engine's endpoint events reach the callback,
// after the transport's lock is released (the callback may call back).
func TestEndpointEvents(t *testing.T) {
	c := newFakeCluster(t, 3)
	var got []string
	var tr *Transport
	cb := func(ev picker.Event) {
		if tr != nil {
			if !tr.mu.TryLock() {
				t.Errorf("%v reported under the transport's lock", ev)
			} else {
				tr.mu.Unlock()
			}
		}
		got = append(got, ev.Kind.String()+" "+ev.Addr)
	}
	tr, _ = newTestTransport(t, c, WithLeaderPollInterval(-1), WithPickerConfig(picker.Config{Events: cb}))
	require.Len(t, got, 3)
	got = nil
	key := func(i int) string { return strings.ToLower(c.members[i].srv.URL) }
	require.NoError(t, tr.SetEndpoints(c.urls()[:2]))
	assert.Equal(t, []string{"removed " + key(2)}, got)
}
