package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// eventLog is the story of one etcdbalance row (-events): the balancer
// events of each of its clients (picker.Config.Events), and the
// scenario's faults, in time order from the moment its clients were
// built. It is printed to stderr when the row's clients close.
type eventLog struct {
	w io.Writer

	mu      sync.Mutex
	t0      time.Time
	members map[string]int // address -> member number, as in the tables
	clients int
	lines   []string
	dropped int
}

// maxEventLines bounds one row's log: a member that flaps for a whole
// run would otherwise print thousands of lines.
const maxEventLines = 200

func newEventLog(w io.Writer) *eventLog { return &eventLog{w: w} }

// start begins a row's log, over the target's endpoints.
func (l *eventLog) start(endpoints []string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t0, l.clients, l.lines, l.dropped = time.Now(), 0, nil, 0
	l.members = map[string]int{}
	for i, ep := range endpoints {
		if _, rest, ok := strings.Cut(ep, "://"); ok {
			ep = rest
		}
		l.members[ep] = i
	}
}

// client returns the event callback of the next client.
func (l *eventLog) client() func(picker.Event) {
	l.mu.Lock()
	l.clients++
	c := l.clients
	l.mu.Unlock()
	return func(ev picker.Event) {
		switch ev.Kind {
		case picker.EventViewAnswer, picker.EventViewRound:
			return // every round, for metrics
		}
		l.add(fmt.Sprintf("client %d  %s", c, l.describe(ev)))
	}
}

// describe is ev with its member numbered as in the result tables.
func (l *eventLog) describe(ev picker.Event) string {
	l.mu.Lock()
	i, ok := l.members[ev.Addr]
	l.mu.Unlock()
	if ok {
		ev.Addr = fmt.Sprintf("member %d (%s)", i, ev.Addr)
	}
	return ev.String()
}

// mark records a scenario step (a fault switched on or off).
func (l *eventLog) mark(what string) {
	if l == nil || strings.Contains(what, "counters") {
		return
	}
	l.add("-- " + what)
}

func (l *eventLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) >= maxEventLines {
		l.dropped++
		return
	}
	l.lines = append(l.lines, fmt.Sprintf("%8.3fs  %s", time.Since(l.t0).Seconds(), line))
}

// print writes the row's log.
func (l *eventLog) print(row string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "events of %s (%d clients; seconds since they were built):\n", row, l.clients)
	for _, s := range l.lines {
		fmt.Fprintf(l.w, "  %s\n", s)
	}
	if l.dropped > 0 {
		fmt.Fprintf(l.w, "  ... %d more\n", l.dropped)
	}
}
