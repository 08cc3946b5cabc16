package v2compat

import (
	"sync"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// Events: set picker.Config.Events (with the WithPickerConfig option) to
// hear of the engine's events (ejections, probes...) and of the
// transport's: EventLeaderChanged when the leader lookup finds a new
// leader, EventMarkedDown when a member's request fails (it is avoided
// for a while), EventMarkedStale when a member is left out of reads for
// answering behind; each once until the member answers well again. The
// callback runs on the goroutine of the request, the leader poll or the
// SetEndpoints that caused the event, never while the transport holds
// its lock. Wired to glog, for a Kubernetes 1.7 tree:
//
//	cfg := picker.Config{Events: func(ev picker.Event) { glog.Infof("etcd v2 balancer: %v", ev) }}
//	tr, err := v2compat.New(inner, endpoints, v2compat.WithPickerConfig(cfg))

// leaderEvent reports key as the new leader, unless it is none or the
// last one reported: an election that leaves the leader unknown for a
// while gives one event.
func (t *Transport) leaderEvent(key string) {
	if key == "" {
		return
	}
	if prev, _ := t.saidLeader.Load().(string); prev == key {
		return
	}
	t.saidLeader.Store(key)
	t.p.Emit(picker.Event{Kind: picker.EventLeaderChanged, Addr: key})
}

// heldEvents holds back the engine's EventAdded and EventRemoved, which
// its SetEndpoints reports while the transport holds t.mu (installLocked),
// a lock that requests take too (expireTags): flush hands them to the
// callback once the lock is released. No other event comes from there.
type heldEvents struct {
	mu   sync.Mutex
	evs  []picker.Event
	user func(picker.Event)
}

// wrap returns the callback to give the engine in place of user (nil
// when user is nil: no callback, no cost).
func (h *heldEvents) wrap(user func(picker.Event)) func(picker.Event) {
	if user == nil {
		return nil
	}
	h.user = user
	return func(ev picker.Event) {
		if ev.Kind == picker.EventAdded || ev.Kind == picker.EventRemoved {
			h.mu.Lock()
			h.evs = append(h.evs, ev)
			h.mu.Unlock()
			return
		}
		user(ev)
	}
}

func (h *heldEvents) flush() {
	h.mu.Lock()
	evs := h.evs
	h.evs = nil
	h.mu.Unlock()
	for _, ev := range evs {
		h.user(ev)
	}
}
