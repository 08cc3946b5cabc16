package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/v2"
	"golang.org/x/time/rate"
)

// session is one policy's clients on one target, kept for all of that
// policy's measurement (one run, or every round of the overhead scenario).
type session struct {
	pol     *policy
	tgt     *target
	sc      *scenario
	o       *options
	drivers []driver // one per client

	measuring atomic.Bool    // requests started now are recorded
	served    []atomic.Int64 // per member, while measuring
	// progress counters, while measuring
	done, failed atomic.Int64
	events       atomic.Int64 // watch events received, while open
	keepAlives   atomic.Int64 // lease keep-alive answers, while open
	storm        *stormShared // job-storm only

	stopWatch context.CancelFunc
	watchWG   sync.WaitGroup
}

// newSession builds one client per -clients with the policy's constructor
// and opens the watches.
func newSession(ctx context.Context, pol *policy, tgt *target, sc *scenario, o *options) (*session, error) {
	s := &session{pol: pol, tgt: tgt, sc: sc, o: o, served: make([]atomic.Int64, len(tgt.endpoints))}
	pol.events.start(tgt.endpoints)
	if sc.storm {
		if pol.v2 || pol.vintage != "" {
			return nil, fmt.Errorf("%s: scenario %s needs clientv3 (Txn, leases)", pol.name, sc.name)
		}
		s.storm = newStormShared(tgt.prefix, pol.name)
	}
	for range o.clients {
		d, err := s.newDriver(ctx)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("%s: new client: %w", pol.name, err)
		}
		s.drivers = append(s.drivers, d)
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.stopWatch = cancel
	if sc.watch {
		for _, d := range s.drivers {
			s.watchWG.Go(func() { d.watch(wctx, &s.events) })
		}
	}
	if sc.leases > 0 {
		for _, d := range s.drivers {
			if v3, ok := d.(*v3Driver); ok {
				s.watchWG.Go(func() { keepAlive(wctx, v3.cli, sc.leases, &s.keepAlives) })
			}
		}
	}
	return s, nil
}

func (s *session) newDriver(ctx context.Context) (driver, error) {
	if s.pol.vintage != "" {
		return newVintageDriver(s.pol.vintage, s.tgt.endpoints, s.tgt.prefix)
	}
	if !s.pol.v2 {
		cfg := v3Config(s.tgt.endpoints, newAttribution(ctx, s.tgt.endpoints))
		cli, err := s.pol.newV3(cfg)
		if err != nil {
			return nil, err
		}
		return &v3Driver{cli: cli, prefix: s.tgt.prefix, serial: s.sc.serial}, nil
	}
	index := map[string]int{}
	for i, ep := range s.tgt.endpoints {
		if u, err := url.Parse(ep); err == nil {
			index[u.Host] = i
		}
	}
	tr := newHTTPTransport(s.o.concurrency)
	c, closeFn, err := s.pol.newV2(client.Config{
		Endpoints: s.tgt.endpoints,
		Transport: &countingTransport{inner: tr, index: index, s: s},
	})
	if err != nil {
		return nil, err
	}
	return &v2Driver{
		kapi:    client.NewKeysAPI(c),
		prefix:  s.tgt.prefix[:len(s.tgt.prefix)-1],
		closeFn: closeFn,
		tr:      tr,
	}, nil
}

// close ends the watches and closes the clients.
func (s *session) close() {
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.watchWG.Wait()
	for _, d := range s.drivers {
		_ = d.close()
	}
	s.pol.events.print(s.pol.name)
}

// segment is what one measurement recorded.
type segment struct {
	lat      []time.Duration // every request, in no order
	member   []int8          // the member that answered lat[i], -1 unknown
	ops      []op            // the operation of lat[i]
	failed   []bool          // whether lat[i] failed
	requests int64
	errors   int64
	kinds    map[string]int64 // errors by kind
	served   []int64          // per member
	elapsed  time.Duration
	// job-storm: compare-and-swap updates that lost once and were retried,
	// and those that lost the retry too.
	casRetries, casConflicts int64
}

// hook is something to do at a fraction of the measured time (a fault
// switched on or off).
type hook struct {
	at   float64
	name string
	fn   func()
}

// worker is one closed-loop request loop of one client.
type worker struct {
	drv   driver
	rng   *rand.Rand
	lim   *rate.Limiter // nil: full speed
	value []byte
	n     uint64
	storm *stormWorker // job-storm only
	// recorded while measuring
	lat    []time.Duration
	member []int8
	ops    []op
	failed []bool
	errs   int64
	kinds  map[string]int64
	served []int64
}

// measure runs the workers for warmup, then records for d, running the
// hooks on the way, then stops issuing and waits for the requests in
// flight (each ends by its deadline at the latest).
func (s *session) measure(ctx context.Context, warmup, d time.Duration, hooks []hook, tick func(elapsed time.Duration)) (*segment, error) {
	weights := s.sc.weights(len(s.drivers))
	var workers []*worker
	for ci, drv := range s.drivers {
		if weights[ci] <= 0 {
			continue
		}
		var perWorker float64 // requests per second, for pre-sizing
		var lim *rate.Limiter
		if s.sc.rate > 0 {
			r := s.sc.rate * weights[ci]
			// A burst of one: a worker stuck on a slow member must not
			// leave a pile of tokens that fires all at once later.
			lim = rate.NewLimiter(rate.Limit(r), 1)
			perWorker = r / float64(s.o.concurrency)
		} else {
			perWorker = 4000 / float64(s.o.concurrency)
		}
		capacity := int(perWorker*d.Seconds()*1.25) + 64
		for wi := range s.o.concurrency {
			w := &worker{
				drv:    drv,
				rng:    rand.New(rand.NewPCG(uint64(s.o.seed), uint64(ci)<<32|uint64(wi))),
				lim:    lim,
				value:  podValue(ci*1000 + wi),
				kinds:  map[string]int64{},
				served: make([]int64, len(s.tgt.endpoints)),
				lat:    make([]time.Duration, 0, capacity),
				member: make([]int8, 0, capacity),
				ops:    make([]op, 0, capacity),
				failed: make([]bool, 0, capacity),
			}
			if s.storm != nil {
				w.storm = &stormWorker{cli: drv.(*v3Driver).cli, sh: s.storm}
			}
			workers = append(workers, w)
		}
	}
	if len(workers) == 0 {
		return nil, errors.New("no client has requests to send")
	}

	if s.storm != nil {
		s.storm.retries.Store(0)
		s.storm.conflicts.Store(0)
	}
	var stop atomic.Bool
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { s.loop(runCtx, w, &stop) })
	}

	sleep := func(dur time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(dur):
			return true
		}
	}
	ok := warmup <= 0 || sleep(warmup)
	start := time.Now()
	s.measuring.Store(true)
	if ok {
		next := 0
		const step = 100 * time.Millisecond
		for {
			el := time.Since(start)
			for next < len(hooks) && el >= time.Duration(hooks[next].at*float64(d)) {
				s.pol.events.mark(hooks[next].name)
				hooks[next].fn()
				next++
			}
			if el >= d {
				break
			}
			if tick != nil {
				tick(el)
			}
			if !sleep(min(step, d-el)) {
				break
			}
		}
		for ; next < len(hooks); next++ {
			hooks[next].fn()
		}
	}
	elapsed := time.Since(start)
	s.measuring.Store(false)
	stop.Store(true)
	cancelRun() // wakes workers waiting for a token; requests in flight keep their own deadline
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	seg := &segment{kinds: map[string]int64{}, served: make([]int64, len(s.tgt.endpoints)), elapsed: elapsed}
	total := 0
	for _, w := range workers {
		total += len(w.lat)
	}
	seg.lat = make([]time.Duration, 0, total)
	seg.member = make([]int8, 0, total)
	seg.ops = make([]op, 0, total)
	seg.failed = make([]bool, 0, total)
	for _, w := range workers {
		seg.lat = append(seg.lat, w.lat...)
		seg.member = append(seg.member, w.member...)
		seg.ops = append(seg.ops, w.ops...)
		seg.failed = append(seg.failed, w.failed...)
		seg.errors += w.errs
		for k, n := range w.kinds {
			seg.kinds[k] += n
		}
		for i, n := range w.served {
			seg.served[i] += n
		}
	}
	seg.requests = int64(len(seg.lat))
	if s.storm != nil {
		seg.casRetries, seg.casConflicts = s.storm.retries.Load(), s.storm.conflicts.Load()
	}
	// v2 requests are attributed by the transport, into s.served.
	for i := range s.served {
		seg.served[i] += s.served[i].Swap(0)
	}
	return seg, nil
}

// loop is one worker: wait for a token (when paced), send a request with
// a 1 s deadline, record it if it started while measuring.
func (s *session) loop(ctx context.Context, w *worker, stop *atomic.Bool) {
	keys := s.tgt.keys
	for !stop.Load() {
		if w.lim != nil && w.lim.Wait(ctx) != nil {
			return
		}
		if stop.Load() {
			return
		}
		measured := s.measuring.Load()
		o := s.sc.mix.pick(w.rng)
		key := keys[w.rng.IntN(len(keys))]
		var value string
		if o == opPut || o == opCreate || o == opUpdate {
			// A new value each time, the same size.
			w.n++
			copy(w.value, strconv.FormatUint(w.n, 36))
			value = string(w.value)
		}
		pr := probe{member: -1}
		// The deadline hangs off a context that the end of the run does
		// not cancel: a request in flight then finishes or times out
		// like any other.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
		t0 := time.Now()
		var err error
		if w.storm != nil && o >= opCreate {
			err = w.storm.do(context.WithValue(rctx, probeKey{}, &pr), o, w.rng, value, measured)
		} else {
			err = w.drv.do(rctx, o, key, value, &pr)
		}
		lat := time.Since(t0)
		cancel()
		if !measured {
			continue
		}
		w.lat = append(w.lat, lat)
		w.member = append(w.member, int8(pr.member))
		w.ops = append(w.ops, o)
		w.failed = append(w.failed, err != nil)
		if err != nil {
			w.errs++
			w.kinds[errorKind(err)]++
			s.failed.Add(1)
		} else if pr.member >= 0 {
			w.served[pr.member]++
		}
		s.done.Add(1)
	}
}
