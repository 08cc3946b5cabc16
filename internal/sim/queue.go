package sim

import "container/heap"

type eventKind uint8

const (
	evWake     eventKind = iota // a loop's think time is over: send a request
	evServed                    // a worker finished a request
	evSent                      // an answer left a member's link (Mix)
	evRefused                   // a removed member's refusal reaches the client
	evFaultOn                   // a fault window starts
	evFaultOff                  // a fault window ends
	evHedge                     // a read's hedge delay is over (Options.Hedge)
)

// event is one entry of the agenda. Events at the same instant run in the
// order they were scheduled (seq), which keeps a run deterministic.
type event struct {
	at    int64 // virtual ns
	seq   uint64
	kind  eventKind
	id    int    // loop, member or fault index, by kind
	epoch uint64 // member epoch for evServed, link epoch for evSent: stale when it moved
	req   *request
}

// agenda is a min-heap of events by (at, seq), driven through container/heap.
type agenda []*event

func (a agenda) Len() int { return len(a) }
func (a agenda) Less(i, j int) bool {
	if a[i].at != a[j].at {
		return a[i].at < a[j].at
	}
	return a[i].seq < a[j].seq
}
func (a agenda) Swap(i, j int) { a[i], a[j] = a[j], a[i] }
func (a *agenda) Push(x any)   { *a = append(*a, x.(*event)) }
func (a *agenda) Pop() any {
	old := *a
	n := len(old) - 1
	e := old[n]
	old[n] = nil
	*a = old[:n]
	return e
}

// scheduler owns the agenda and recycles events, so that a run of a few
// hundred thousand events allocates only a few hundred.
type scheduler struct {
	q    agenda
	free []*event
	seq  uint64
}

func (s *scheduler) schedule(at int64, kind eventKind, id int, epoch uint64, r *request) {
	var e *event
	if n := len(s.free); n > 0 {
		e, s.free = s.free[n-1], s.free[:n-1]
	} else {
		e = new(event)
	}
	s.seq++
	*e = event{at: at, seq: s.seq, kind: kind, id: id, epoch: epoch, req: r}
	heap.Push(&s.q, e)
}

// peek returns the time of the next event, and false when there is none.
func (s *scheduler) peek() (int64, bool) {
	if len(s.q) == 0 {
		return 0, false
	}
	return s.q[0].at, true
}

// pop removes the next event and returns a copy; the slot is recycled.
func (s *scheduler) pop() event {
	e := heap.Pop(&s.q).(*event)
	v := *e
	*e = event{}
	s.free = append(s.free, e)
	return v
}

// fifo is a queue of requests. Both uses (a member's wait queue, and the
// deadlines, which all have the same length and so fall due in the order
// they were set) need only first-in first-out.
type fifo struct {
	items []*request
	head  int
}

func (f *fifo) push(r *request) { f.items = append(f.items, r) }
func (f *fifo) len() int        { return len(f.items) - f.head }
func (f *fifo) front() *request { return f.items[f.head] }

func (f *fifo) pop() *request {
	r := f.items[f.head]
	f.items[f.head] = nil
	f.head++
	// Reclaim the dead prefix once it is at least half the slice.
	if f.head >= 1024 && f.head*2 >= len(f.items) {
		n := copy(f.items, f.items[f.head:])
		clear(f.items[n:])
		f.items = f.items[:n]
		f.head = 0
	}
	return r
}

// drain empties the queue, returning its items in order.
func (f *fifo) drain() []*request {
	out := append([]*request(nil), f.items[f.head:]...)
	clear(f.items)
	f.items, f.head = f.items[:0], 0
	return out
}
