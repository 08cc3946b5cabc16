package sim

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

// before orders events by (at, seq): a strict total order, so that any
// correct heap pops them in the same sequence.
func (e *event) before(o *event) bool {
	return e.at < o.at || e.at == o.at && e.seq < o.seq
}

// scheduler is the agenda: a 4-ary min-heap of events held by value. It is
// the simulation's hottest structure (a scale run schedules about a million
// events), so it avoids container/heap's interface calls and a pointer per
// event, and a wider node makes the tree half as deep.
type scheduler struct {
	q   []event
	seq uint64
}

// heapArity is the number of children of a node of the agenda.
const heapArity = 4

func (s *scheduler) schedule(at int64, kind eventKind, id int, epoch uint64, r *request) {
	s.seq++
	e := event{at: at, seq: s.seq, kind: kind, id: id, epoch: epoch, req: r}
	// Sift up with a hole: move parents down until e's place is found.
	s.q = append(s.q, event{})
	i := len(s.q) - 1
	for i > 0 {
		p := (i - 1) / heapArity
		if !e.before(&s.q[p]) {
			break
		}
		s.q[i] = s.q[p]
		i = p
	}
	s.q[i] = e
}

// peek returns the time of the next event, and false when there is none.
func (s *scheduler) peek() (int64, bool) {
	if len(s.q) == 0 {
		return 0, false
	}
	return s.q[0].at, true
}

// pop removes the next event and returns it.
func (s *scheduler) pop() event {
	top := s.q[0]
	n := len(s.q) - 1
	last := s.q[n]
	s.q[n] = event{} // drop the request pointer
	s.q = s.q[:n]
	if n == 0 {
		return top
	}
	// Sift the last event down from the root with a hole.
	i := 0
	for {
		c := i*heapArity + 1
		if c >= n {
			break
		}
		best := c
		for k := c + 1; k < c+heapArity && k < n; k++ {
			if s.q[k].before(&s.q[best]) {
				best = k
			}
		}
		if !s.q[best].before(&last) {
			break
		}
		s.q[i] = s.q[best]
		i = best
	}
	s.q[i] = last
	return top
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
