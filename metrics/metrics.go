// Package metrics exports one client's balancing state as Prometheus
// metrics: a prometheus.Collector fed by the engine (package picker) of an
// etcdbalance client, a v2compat transport or the legacy balancer. It is
// a package of its own so that a program that does not want Prometheus
// does not link it.
//
// The collector learns of ejections, leader changes, lag and the rest from
// the engine's events, and reads picks, requests in flight and latency
// estimates from the engine's Snapshot when scraped. Hand Observe to the
// engine as its event callback and register the collector:
//
//	col := metrics.New()
//	prometheus.MustRegister(col)
//	cli, err := etcdbalance.New(cfg, etcdbalance.WithPickerConfig(picker.Config{Events: col.Observe}))
//
// With a v2compat transport, pass the same picker.Config to its picker
// option. A collector serves one client: it follows the first engine
// whose event it sees and ignores events of others (several clients built
// with one DialOptions value share their options' callback, so give each
// such client options of its own if each needs metrics). To export
// several clients from one registry, wrap each collector with
// prometheus.WrapRegistererWith and a label of your own.
//
// Every metric is labelled by member address at most (and a small fixed
// set of classes or reasons), so the number of series is bounded by the
// number of members; a member's series go when it leaves the endpoint set.
//
// Metrics, all prefixed etcdbalance_:
//
//	picks_total{member,class}                counter  requests sent to the member; class point, range, write or stream
//	requests_in_flight{member}               gauge    unary requests not yet answered
//	open_streams{member}                     gauge    watches, keep-alives, long polls open
//	latency_estimate_seconds{member}         gauge    the engine's latency estimate for a point read
//	failures_total{member}                   counter  failures blamed on the member
//	ejected{member}                          gauge    1 while the member is out of rotation
//	ejections_total{member,reason}           counter  ejections; reason failures or probe-failed
//	ejection_probes_total{member}            counter  probes sent after an ejection
//	leader{member}                           gauge    1 for the member the client takes as leader
//	lag_entries{member}                      gauge    applied-index lag at the last view probe
//	view_probe_rounds_total                  counter  cluster view probe rounds completed
//	view_probe_failures_total{member}        counter  cluster view probes that failed
//	guard_reissues_total{to}                 counter  stale reads re-issued by the monotonic guard; to elsewhere, leader or linearizable
//	marks_total{member,mark}                 counter  v2 members marked down or stale
package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

const ns = "etcdbalance_"

var (
	descPicks     = prometheus.NewDesc(ns+"picks_total", "Requests sent to the member, by request class (point, range, write, stream).", []string{"member", "class"}, nil)
	descInFlight  = prometheus.NewDesc(ns+"requests_in_flight", "Unary requests sent to the member and not yet answered.", []string{"member"}, nil)
	descStreams   = prometheus.NewDesc(ns+"open_streams", "Streams (watches, lease keep-alives, v2 long polls) open on the member.", []string{"member"}, nil)
	descEstimate  = prometheus.NewDesc(ns+"latency_estimate_seconds", "The engine's latency estimate of the member for a point read.", []string{"member"}, nil)
	descFailures  = prometheus.NewDesc(ns+"failures_total", "Failed requests blamed on the member.", []string{"member"}, nil)
	descEjected   = prometheus.NewDesc(ns+"ejected", "1 while the member is out of rotation after failures.", []string{"member"}, nil)
	descEjections = prometheus.NewDesc(ns+"ejections_total", "Ejections of the member, by reason (failures, probe-failed).", []string{"member", "reason"}, nil)
	descProbes    = prometheus.NewDesc(ns+"ejection_probes_total", "Probes sent to the member when an ejection ended.", []string{"member"}, nil)
	descLeader    = prometheus.NewDesc(ns+"leader", "1 for the member the client takes as the leader, 0 for the others.", []string{"member"}, nil)
	descLag       = prometheus.NewDesc(ns+"lag_entries", "Raft entries the member's applied index trailed the most advanced member's at the last view probe.", []string{"member"}, nil)
	descRounds    = prometheus.NewDesc(ns+"view_probe_rounds_total", "Cluster view probe rounds completed.", nil, nil)
	descViewFails = prometheus.NewDesc(ns+"view_probe_failures_total", "Cluster view probes of the member that failed.", []string{"member"}, nil)
	descReissues  = prometheus.NewDesc(ns+"guard_reissues_total", "Reads answered below a revision already seen and sent again by the monotonic guard, by where they went (elsewhere, leader, linearizable).", []string{"to"}, nil)
	descMarks     = prometheus.NewDesc(ns+"marks_total", "v2 members marked down (a failed request) or stale (answers behind).", []string{"member", "mark"}, nil)
)

var descs = []*prometheus.Desc{
	descPicks, descInFlight, descStreams, descEstimate, descFailures, descEjected,
	descEjections, descProbes, descLeader, descLag, descRounds, descViewFails, descReissues, descMarks,
}

// memberCounts is what events taught the collector about one member.
type memberCounts struct {
	ejections    map[string]float64 // by reason
	probes       float64
	viewFailures float64
	lag          int64
	lagKnown     bool
	marks        map[string]float64 // by mark
}

// Collector is a prometheus.Collector for one client. Its methods are
// safe for concurrent use. The zero value is not usable: call New.
type Collector struct {
	mu       sync.Mutex
	engine   *picker.Picker // the engine followed; nil until its first event
	members  map[string]*memberCounts
	leader   string
	rounds   float64
	reissues map[string]float64
}

// New returns a collector that follows no engine yet: the first event
// handed to Observe names it.
func New() *Collector {
	return &Collector{members: map[string]*memberCounts{}, reissues: map[string]float64{}}
}

func (c *Collector) member(addr string) *memberCounts {
	m := c.members[addr]
	if m == nil {
		m = &memberCounts{}
		c.members[addr] = m
	}
	return m
}

// Observe records one event. It is the engine's event callback
// (picker.Config.Events); it takes a short lock and allocates only when a
// member or a reason is seen for the first time.
func (c *Collector) Observe(ev picker.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.engine == nil {
		c.engine = ev.Picker
	} else if ev.Picker != nil && ev.Picker != c.engine {
		return // another client's engine
	}
	switch ev.Kind {
	case picker.EventEjected:
		m := c.member(ev.Addr)
		if m.ejections == nil {
			m.ejections = map[string]float64{}
		}
		m.ejections[ev.Reason]++
	case picker.EventProbe:
		c.member(ev.Addr).probes++
	case picker.EventRemoved:
		delete(c.members, ev.Addr)
		if c.leader == ev.Addr {
			c.leader = ""
		}
	case picker.EventLeaderChanged:
		c.leader = ev.Addr
	case picker.EventViewAnswer, picker.EventLagging, picker.EventCaughtUp:
		m := c.member(ev.Addr)
		m.lag, m.lagKnown = ev.Lag, true
	case picker.EventViewRound:
		c.rounds++
	case picker.EventViewProbeFailed:
		m := c.member(ev.Addr)
		m.viewFailures++
	case picker.EventGuardReissue:
		c.reissues[ev.Reason]++
	case picker.EventMarkedDown, picker.EventMarkedStale:
		m := c.member(ev.Addr)
		if m.marks == nil {
			m.marks = map[string]float64{}
		}
		mark := "down"
		if ev.Kind == picker.EventMarkedStale {
			mark = "stale"
		}
		m.marks[mark]++
	}
}

// Describe sends the descriptions of every metric the collector exports.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range descs {
		ch <- d
	}
}

// Collect sends the current values: the engine's snapshot, and what the
// events taught the collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	eng := c.engine
	c.mu.Unlock()
	var snap []picker.EndpointStats
	if eng != nil {
		snap = eng.Snapshot() // outside the lock: Observe may run on a request's path
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	none := &memberCounts{}
	for _, s := range snap {
		a := s.Addr
		var unary int64
		for cl, n := range s.ClassPicks {
			unary += n
			counter(descPicks, float64(n), a, picker.Class(cl).String())
		}
		counter(descPicks, float64(s.Picks-unary), a, "stream")
		gauge(descInFlight, float64(s.InFlight), a)
		gauge(descStreams, float64(s.Streams), a)
		gauge(descEstimate, s.Estimate.Seconds(), a)
		counter(descFailures, float64(s.Failures), a)
		gauge(descEjected, boolFloat(s.Ejected), a)
		if c.leader != "" {
			gauge(descLeader, boolFloat(a == c.leader), a)
		}

		m := c.members[a]
		if m == nil {
			m = none
		}
		// Both reasons from zero, so that a rate over them is defined
		// before the first ejection.
		counter(descEjections, m.ejections[picker.ReasonFailures], a, picker.ReasonFailures)
		counter(descEjections, m.ejections[picker.ReasonProbeFailed], a, picker.ReasonProbeFailed)
		for r, n := range m.ejections {
			if r != picker.ReasonFailures && r != picker.ReasonProbeFailed {
				counter(descEjections, n, a, r)
			}
		}
		counter(descProbes, m.probes, a)
		if m.lagKnown {
			gauge(descLag, float64(m.lag), a)
		}
		if c.rounds > 0 || m.viewFailures > 0 {
			counter(descViewFails, m.viewFailures, a)
		}
		for k, n := range m.marks {
			counter(descMarks, n, a, k)
		}
	}
	counter(descRounds, c.rounds)
	for to, n := range c.reissues {
		counter(descReissues, n, to)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
