package main

import (
	"math/rand/v2"
	"time"

	"github.com/etcdbalance/etcdbalance-go/internal/faultproxy"
)

// The gc-pauses scenario (issue 14): one follower's proxy stops forwarding
// (faultproxy.Proxy.Pause: connections stay up, bytes are held) for a
// uniformly drawn 100–300 ms, at exponential gaps of 2 s on average, as a
// member in a GC pause; Gets are serializable, so that hedged reads
// (etcdbalance.WithHedgedReads, the etcdbalance-hedged row) apply.
const (
	pauseMeanGap = 2 * time.Second
	pauseMin     = 100 * time.Millisecond
	pauseMax     = 300 * time.Millisecond
)

// pauseRand is the source of one policy's pauses: every policy gets the
// same sequence, and so do the rounds of one row, which continue it, so
// that ten rounds of 2 s see the pauses a 20 s run would, not its first
// one ten times.
func (b *bench) pauseRand() *rand.Rand { return rand.New(rand.NewPCG(uint64(b.o.seed), 14)) }

// pauseHooks starts the pauses, drawn from rng, when a measured run starts
// and ends them (resuming the member) when it ends.
func (b *bench) pauseHooks(tgt *target, st *setup, rng *rand.Rand) []hook {
	if !b.o.scenario.pauses || st.FaultMember < 0 {
		return nil
	}
	p := tgt.proxies[st.FaultMember]
	stop, done := make(chan struct{}), make(chan struct{})
	return []hook{
		{at: 0, name: "pauses on", fn: func() { go pauseLoop(p, rng, stop, done) }},
		{at: 1, name: "pauses off", fn: func() {
			close(stop)
			<-done
		}},
	}
}

// callsHook adds to *calls, at the end of a measured run, the gRPC calls
// that reached the members since their counters were zeroed at its start
// (bench.hooks): the calls the clients made, plus the hedged copies and
// the cluster view's probes. Only the gc-pauses scenario reports them.
func (b *bench) callsHook(tgt *target, calls *int64) []hook {
	if !b.o.scenario.pauses || !tgt.faultable() {
		return nil
	}
	return []hook{{at: 1, name: "count calls", fn: func() {
		for _, q := range tgt.proxies {
			*calls += q.Stats().Streams
		}
	}}}
}

// pauseLoop pauses p again and again until stop is closed, then resumes it.
func pauseLoop(p *faultproxy.Proxy, rng *rand.Rand, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	defer p.Resume()
	for {
		gap := time.Duration(rng.ExpFloat64() * float64(pauseMeanGap))
		select {
		case <-stop:
			return
		case <-time.After(gap):
		}
		p.Pause()
		select {
		case <-stop:
			return
		case <-time.After(pauseMin + time.Duration(rng.Float64()*float64(pauseMax-pauseMin))):
		}
		p.Resume()
	}
}
