package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// requestTimeout is every request's deadline; a request that misses it
// counts as an error.
const requestTimeout = time.Second

// scenario is a workload and the faults injected under it.
type scenario struct {
	name  string
	about string // one line, printed with the results
	// weights gives each client's share of the requests. A client with
	// weight 0 sends no requests but still holds its watch, as an
	// apiserver that the load balancer dropped still keeps its caches.
	weights func(clients int) []float64
	mix     mix
	// rate is the total offered load in requests per second over all
	// clients, split by weight; 0 runs every client with a positive weight
	// closed-loop at full speed.
	rate float64
	// capFactor, when positive, caps every member's proxy bandwidth at the
	// busiest client's offered bytes per second divided by capFactor, so a
	// member pinned by that client gets capFactor times what it can carry.
	// The bytes per request are measured before the first policy runs.
	capFactor float64
	watch     bool          // one watch per client on the pod prefix
	slow      time.Duration // latency added each way at one follower's proxy
	blackhole bool          // black-hole one follower for the middle third
	rounds    bool          // run the policies in alternating rounds
	// storm sends the job-storm operations (Txn creates, compare-and-swap
	// updates, lease grants), which only clientv3 policies can send.
	storm bool
	// leases is how many leases each client keeps alive on a stream of
	// its own for the whole session.
	leases int
	// pauses pauses one follower again and again (gcpauses.go); serial
	// makes the v3 Gets serializable.
	pauses, serial bool
}

// mix is the probability of each operation; the rest are Gets.
type mix struct {
	list, put float64
	// The job-storm operations (see storm.go).
	create, update, grant float64
}

// op is one kind of request.
type op uint8

const (
	opGet    op = iota // a single key, linearizable
	opList             // the whole pod prefix, linearizable
	opPut              // an update of an existing key
	opCreate           // Txn: mod_revision(new key) == 0, then put
	opUpdate           // Txn: mod_revision == last seen, then put; re-read and retry once
	opGrant            // LeaseGrant
	numOps
)

func (o op) String() string {
	return [...]string{"get", "list", "put", "create", "update", "lease-grant"}[o]
}

// write reports whether o changes the cluster (goes through raft).
func (o op) write() bool { return o != opGet && o != opList }

// pick draws an operation.
func (m mix) pick(r *rand.Rand) op {
	// Cumulative sums in the order list, put, ...: the same draws give the
	// same operations as before the job-storm ones were added.
	x, c := r.Float64(), 0.0
	for o := opList; o < numOps; o++ {
		if c += m.share(o); x < c {
			return o
		}
	}
	return opGet
}

// share returns the probability of o.
func (m mix) share(o op) float64 {
	switch o {
	case opList:
		return m.list
	case opPut:
		return m.put
	case opCreate:
		return m.create
	case opUpdate:
		return m.update
	case opGrant:
		return m.grant
	}
	return 1 - m.list - m.put - m.create - m.update - m.grant
}

// busyWeights gives the first client busy of the requests and splits the
// rest evenly: the incident's load balancer had lost two of the three
// apiservers, so nearly everything landed on the one left.
func busyWeights(busy float64) func(int) []float64 {
	return func(n int) []float64 {
		w := make([]float64, n)
		if n == 1 {
			w[0] = 1
			return w
		}
		w[0] = busy
		for i := 1; i < n; i++ {
			w[i] = (1 - busy) / float64(n-1)
		}
		return w
	}
}

func evenWeights(n int) []float64 {
	w := make([]float64, n)
	for i := range w {
		w[i] = 1 / float64(n)
	}
	return w
}

// smallMix is Gets with a few updates: requests small enough that the
// balancer, not the bytes, is what the scenario measures.
var smallMix = mix{put: 0.05}

// The scenarios. Rates were chosen on a 2-core machine with the whole
// cluster in-process: the paced ones keep the CPU well below saturation
// (incident used about a third of the two cores, slow-member and blackhole
// under half), so that latency differences come from where requests go
// rather than from CPU queueing.
var scenarios = []*scenario{
	{
		name:  "incident",
		about: "3 apiservers, one takes 80% after the load balancer lost the others; Gets, Lists of the pod prefix, updates, watches; bandwidth capped per member",
		// Lists are 2% of the requests but about 95% of the bytes, as
		// with an apiserver whose clients list pods without the watch cache.
		weights:   busyWeights(0.8),
		mix:       mix{list: 0.02, put: 0.05},
		rate:      500,
		capFactor: 1.7,
		watch:     true,
	},
	{
		name:  "skewed-clients",
		about: "the load balancer failure: one client carries the whole load of Gets and updates; bandwidth capped per member",
		// In-process members share the same two cores, so without a cap
		// of its own a pinned member never runs out of anything: the cap
		// stands for the member's own machine, as in incident, but here
		// small requests, not Lists, fill it.
		weights:   busyWeights(1),
		mix:       smallMix,
		rate:      1500,
		capFactor: 1.7,
		watch:     true,
	},
	{
		name:    "slow-member",
		about:   "one follower's proxy adds 20 ms each way (about +40 ms a round trip)",
		weights: evenWeights,
		mix:     smallMix,
		rate:    1500,
		watch:   true,
		slow:    20 * time.Millisecond,
	},
	{
		name:      "blackhole",
		about:     "one follower's proxy swallows every byte, connections open, for the middle third of each run",
		weights:   evenWeights,
		mix:       smallMix,
		rate:      1500,
		watch:     true,
		blackhole: true,
	},
	{
		name:  "job-storm",
		about: "a Kubernetes job storm: Txn creates, compare-and-swap updates, lease grants and keep-alives, prefix watches, 30% Gets; full speed, policies in alternating rounds",
		// Writes are 70% of the requests, so where they go (the leader, or
		// a follower that forwards them) is what this scenario measures.
		// Full speed, because the claim to compare (etcd PR #22328) is
		// about throughput; rounds, because throughput on a shared machine
		// drifts.
		weights: evenWeights,
		mix:     mix{create: 0.25, update: 0.40, grant: 0.05},
		watch:   true,
		rounds:  true,
		storm:   true,
		leases:  4,
	},
	{
		name:    "gc-pauses",
		about:   "one follower's proxy pauses for 100-300 ms at exponential gaps of 2 s on average, as in a GC pause; serializable Gets",
		weights: evenWeights,
		mix:     smallMix,
		rate:    1500,
		pauses:  true,
		serial:  true,
	},
	{
		name:    "overhead",
		about:   "healthy cluster at full speed, policies in alternating rounds",
		weights: evenWeights,
		mix:     smallMix,
		rounds:  true,
	},
}

func scenarioNames() []string {
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.name
	}
	return names
}

func lookupScenario(name string) (*scenario, error) {
	for _, s := range scenarios {
		if s.name == name {
			return s, nil
		}
	}
	return nil, fmt.Errorf("-scenario: unknown scenario %q (want one of %s)", name, strings.Join(scenarioNames(), ", "))
}

// roundLength is the target length of one round of the overhead
// scenario: long enough for a few thousand requests, short enough that
// machine noise hits every policy alike.
const roundLength = 2 * time.Second

// rounds splits d into rounds of about roundLength.
func rounds(d time.Duration) (n int, each time.Duration) {
	n = max(1, int(d/roundLength))
	return n, d / time.Duration(n)
}
