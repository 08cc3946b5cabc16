package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// bench runs one scenario.
type bench struct {
	o   *options
	out io.Writer
	con *console
	rep *report
}

func newBench(o *options, stdout, stderr io.Writer) *bench {
	return &bench{
		o:   o,
		out: stdout,
		con: newConsole(stderr),
		rep: &report{
			Scenario:    o.scenario.name,
			Members:     o.members,
			Clients:     o.clients,
			DurationS:   o.duration.Seconds(),
			Machine:     machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH},
			Results:     []*result{},
			V2Results:   []*result{},
			About:       o.scenario.about,
			Concurrency: o.concurrency,
			Seed:        o.seed,
			Keys:        o.keys,
			RateRPS:     o.scenario.rate,
			WarmupS:     o.warmup.Seconds(),
			External:    len(o.endpoints) > 0,
			Skipped:     []skipped{},
			Notes:       []string{},
		},
	}
}

// note prints a line to stderr and keeps it for the JSON report.
func (b *bench) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	b.rep.Notes = append(b.rep.Notes, s)
	b.con.printf("%s\n", s)
}

// skip leaves a policy out of the results, saying why.
func (b *bench) skip(pol *policy, reason string) {
	b.rep.Skipped = append(b.rep.Skipped, skipped{Policy: pol.name, Reason: reason})
	b.con.printf("%s: left out: %s\n", pol.name, reason)
}

func (b *bench) run(ctx context.Context) error {
	o := b.o
	var v3pols, v2pols []*policy
	for _, p := range o.policies {
		switch {
		case p.v2:
			v2pols = append(v2pols, p)
		case p.vintage != "":
			// Built before the clusters start, so that a failed build only
			// leaves these rows out.
			b.con.printf("%s: building the vintage driver\n", p.name)
			if _, err := vintageBinary(p.vintage); err != nil {
				b.skip(p, err.Error())
				continue
			}
			v3pols = append(v3pols, p)
		default:
			v3pols = append(v3pols, p)
		}
	}
	b.con.printf("scenario %s: %s\n", o.scenario.name, o.scenario.about)
	if l, ok := loadAverage(); ok {
		b.rep.Machine.LoadAvg = l
		if l > 0.5*float64(runtime.NumCPU()) {
			b.note("the machine was busy before the start (load average %.2f on %d CPUs): the numbers will be noisy", l, runtime.NumCPU())
		}
	}
	if len(v3pols) > 0 {
		st, rs, err := b.runGroup(ctx, false, v3pols)
		if err != nil {
			return err
		}
		b.rep.V3, b.rep.Results = st, rs
	}
	if len(v2pols) > 0 {
		if len(o.endpoints) > 0 && len(o.v2Endpoints) == 0 {
			for _, p := range v2pols {
				b.skip(p, "with -endpoints the v2 rows need a cluster that serves the v2 API: give it with -v2-endpoints")
			}
		} else {
			st, rs, err := b.runGroup(ctx, true, v2pols)
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case err != nil:
				for _, p := range v2pols {
					b.skip(p, fmt.Sprintf("the v2 cluster did not start: %v", err))
				}
			default:
				b.rep.V2, b.rep.V2Results = st, rs
			}
		}
	}
	b.rep.Ratio = overheadRatio(o.scenario, b.rep.Results)
	b.rep.Incident = checkIncident(o.scenario, b.rep.Results)
	completeSlowCheck(b.rep.SlowMember, b.rep.Results)
	completePauseCheck(b.rep.GCPauses, b.rep.Results)
	b.rep.JobStorm = checkStorm(o.scenario, b.rep.Results)

	fmt.Fprintf(b.out, "scenario %s: %s\n", o.scenario.name, o.scenario.about)
	load := "full speed"
	if o.scenario.rate > 0 {
		load = fmt.Sprintf("%.0f req/s offered", o.scenario.rate)
	}
	fmt.Fprintf(b.out, "%d members, %d clients x %d in flight, %s, %v per policy after %v warm-up, 1 s deadline; %d CPUs, %s\n",
		o.members, o.clients, o.concurrency, load, o.duration, o.warmup, runtime.NumCPU(), runtime.Version())
	if len(b.rep.Results) > 0 {
		printTable(b.out, "v3 (etcd 3.6, gRPC)", b.rep.V3, b.rep.Results)
	}
	if len(b.rep.V2Results) > 0 {
		printTable(b.out, "v2 (etcd 3.5, HTTP/JSON; not comparable with the v3 rows)", b.rep.V2, b.rep.V2Results)
	}
	if r := b.rep.Ratio; r != nil {
		fmt.Fprintf(b.out, "\nthroughput %s / %s: median of %d rounds %.3f (rounds:", r.Policy, r.Baseline, len(r.Rounds), r.Median)
		for _, x := range r.Rounds {
			fmt.Fprintf(b.out, " %.3f", x)
		}
		fmt.Fprintln(b.out, ")")
	}
	printChecks(b.out, b.rep)
	for _, s := range b.rep.Skipped {
		fmt.Fprintf(b.out, "left out %s: %s\n", s.Policy, s.Reason)
	}

	var errs []error
	if o.jsonPath != "" {
		if err := writeJSON(o.jsonPath, b.rep); err != nil {
			errs = append(errs, err)
		}
	}
	if o.plotsDir != "" {
		files, err := writePlots(o.plotsDir, b.rep)
		if err != nil {
			errs = append(errs, err)
		}
		for _, f := range files {
			b.con.printf("wrote %s\n", f)
		}
	}
	return errors.Join(errs...)
}

// loadAverage returns the 1-minute load average, where the system tells.
func loadAverage() (float64, bool) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, false
	}
	var l float64
	if _, err := fmt.Sscan(string(b), &l); err != nil {
		return 0, false
	}
	return l, true
}

func writeJSON(path string, rep *report) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("-json: %w", err)
	}
	return nil
}

// overheadRatio compares etcdbalance with v3-roundrobin round by round.
func overheadRatio(sc *scenario, rs []*result) *ratio {
	if !sc.rounds {
		return nil
	}
	var eb, rr *result
	for _, r := range rs {
		switch r.Policy {
		case "etcdbalance":
			eb = r
		case "v3-roundrobin":
			rr = r
		}
	}
	if eb == nil || rr == nil || len(eb.RoundsRPS) != len(rr.RoundsRPS) || len(eb.RoundsRPS) == 0 {
		return nil
	}
	q := &ratio{Policy: eb.Policy, Baseline: rr.Policy}
	for i := range eb.RoundsRPS {
		if rr.RoundsRPS[i] > 0 {
			q.Rounds = append(q.Rounds, round3(eb.RoundsRPS[i]/rr.RoundsRPS[i]))
		}
	}
	if len(q.Rounds) == 0 {
		return nil
	}
	q.Median = round3(median(q.Rounds))
	return q
}

// runGroup starts the target of one protocol and runs its policies.
func (b *bench) runGroup(ctx context.Context, v2 bool, pols []*policy) (*setup, []*result, error) {
	o, sc := b.o, b.o.scenario
	proto := "v3"
	start := startV3
	if v2 {
		proto = "v2"
		start = startV2
		if len(o.v2Endpoints) == 0 {
			b.con.printf("v2: starting %d etcd 3.5 member processes (the first run builds them, about a minute)\n", o.members)
		}
	} else if len(o.endpoints) == 0 {
		b.con.printf("v3: starting %d in-process etcd members\n", o.members)
	}
	tgt, err := start(ctx, o)
	if err != nil {
		return nil, nil, fmt.Errorf("%s cluster: %w", proto, err)
	}
	defer func() {
		if tgt.cleanup != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := tgt.cleanup(cctx); err != nil {
				b.note("%s: removing the benchmark's keys: %v", proto, err)
			}
			cancel()
		}
		if err := tgt.closeFn(); err != nil {
			b.note("%s: closing the cluster: %v", proto, err)
		}
	}()

	st := &setup{MemberNames: tgt.names, Leader: -1, FaultMember: -1}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	st.Leader, err = tgt.leader(lctx)
	cancel()
	if err != nil {
		b.note("%s: leader unknown: %v", proto, err)
		st.Leader = -1
	}
	if sc.slow > 0 || sc.blackhole || sc.pauses {
		if tgt.faultable() {
			// A follower, and the same one for every policy. Only its
			// client traffic is hit: raft between members is untouched.
			st.FaultMember = (max(st.Leader, 0) + 1) % len(tgt.endpoints)
			if len(tgt.endpoints) == 1 {
				b.note("%s: one member only: the fault hits it, and so every request", proto)
			}
		} else {
			what := fmt.Sprintf("the latency (+%v each way)", sc.slow)
			if sc.blackhole {
				what = "the black hole"
			}
			b.note("%s: cannot inject %s into an external cluster (no proxies): running without it", proto, what)
		}
	}
	if sc.capFactor > 0 {
		if tgt.faultable() {
			if err := b.calibrate(ctx, tgt, st); err != nil {
				return nil, nil, fmt.Errorf("%s: measuring request sizes: %w", proto, err)
			}
		} else {
			b.note("%s: cannot cap the members' bandwidth of an external cluster (no proxies): running without caps", proto)
		}
	}

	var rs []*result
	if sc.rounds {
		rs, err = b.runRounds(ctx, tgt, st, pols)
	} else {
		var paired *result
		if (sc.slow > 0 || sc.pauses) && st.FaultMember >= 0 && !v2 {
			if paired, err = b.runHealthy(ctx, tgt, st, pols); err != nil {
				return nil, nil, err
			}
		}
		for _, pol := range pols {
			var r *result
			if paired != nil && pol.name == paired.Policy {
				rs = append(rs, paired)
				continue
			}
			r, err = b.runPolicy(ctx, tgt, st, pol, false)
			if err != nil {
				break
			}
			if r != nil {
				rs = append(rs, r)
			}
		}
	}
	if err != nil {
		return nil, nil, err
	}
	if rs == nil {
		rs = []*result{}
	}
	return st, rs, nil
}

// reset puts the target back to the scenario's starting state: faults
// off, bandwidth capped as calibrated, counters zero, history compacted.
func (b *bench) reset(ctx context.Context, tgt *target, st *setup) error {
	for _, p := range tgt.proxies {
		p.Blackhole(false)
		p.Resume()
		p.SetLatency(0, 0)
		p.SetBandwidth(st.BandwidthCap)
		p.ResetStats()
	}
	if b.o.scenario.slow > 0 && st.FaultMember >= 0 {
		tgt.proxies[st.FaultMember].SetLatency(b.o.scenario.slow, 0)
	}
	if tgt.compact != nil {
		return tgt.compact(ctx)
	}
	return nil
}

// hooks returns what happens during a measured run: counters zeroed at
// its start, and the black hole for its middle third.
func (b *bench) hooks(tgt *target, st *setup) []hook {
	hs := []hook{{at: 0, name: "reset counters", fn: func() {
		for _, p := range tgt.proxies {
			p.ResetStats()
		}
	}}}
	if b.o.scenario.blackhole && st.FaultMember >= 0 {
		p := tgt.proxies[st.FaultMember]
		hs = append(hs,
			hook{at: 1.0 / 3, name: "black hole on", fn: func() { p.Blackhole(true) }},
			hook{at: 2.0 / 3, name: "black hole off", fn: func() { p.Blackhole(false) }})
	}
	return hs
}

// proxyBytes returns what went through each proxy since its counters
// were zeroed, nil for an external cluster.
func proxyBytes(tgt *target) []int64 {
	if !tgt.faultable() {
		return nil
	}
	out := make([]int64, len(tgt.proxies))
	for i, p := range tgt.proxies {
		s := p.Stats()
		out[i] = s.BytesToClient + s.BytesToServer
	}
	return out
}

// runHealthy measures one etcdbalance row with the scenario's fault on
// one member and with it off (the tail the same clients get when no member
// is faulted, the floor the faulted row is judged against), in
// alternating rounds: healthy, faulted, healthy, faulted… Machine noise
// then hits both alike; run a minute apart, the two differed by 2–3× on a
// loaded machine. Each side has a session of its own, built once, so that
// neither inherits the other's picture of the member, and every round
// starts with an unmeasured warm-up, as a single run does. The row is
// etcdbalance with a slow member (slow-member) and etcdbalance-hedged with
// pauses (gc-pauses: issue 14's goal is about hedging). It returns that
// row with the fault; nil when the run has no such row.
func (b *bench) runHealthy(ctx context.Context, tgt *target, st *setup, pols []*policy) (*result, error) {
	sc := b.o.scenario
	name, fault := "etcdbalance", "slowed"
	if sc.pauses {
		name, fault = "etcdbalance-hedged", "paused"
	}
	i := slices.IndexFunc(pols, func(p *policy) bool { return p.name == name })
	if i < 0 {
		b.note("no %s row: no healthy rounds to compare the faulted member with", name)
		return nil, nil
	}
	pol := pols[i]
	if err := b.reset(ctx, tgt, st); err != nil {
		return nil, err
	}
	var sessions [2]*session // 0 healthy, 1 faulted
	defer func() {
		for _, s := range sessions {
			if s != nil {
				s.close()
			}
		}
	}()
	for k := range sessions {
		s, err := newSession(ctx, pol, tgt, sc, b.o)
		if err != nil {
			b.skip(pol, err.Error())
			return nil, nil
		}
		sessions[k] = s
	}
	faulted := tgt.proxies[st.FaultMember]
	pauses := b.pauseRand()
	n, each := rounds(b.o.duration)
	b.con.printf("%s: %d rounds of %v healthy, then %v %s, %v warm-up before each\n", pol.name, n, each, each, fault, b.o.warmup)
	var (
		segs  [2][]*segment
		bytes [2][]int64
		calls [2]int64
	)
	for k := range bytes {
		bytes[k] = make([]int64, len(tgt.endpoints))
	}
	for r := range n {
		for k, s := range sessions {
			hooks := b.hooks(tgt, st)
			label := fmt.Sprintf("healthy %d/%d", r+1, n)
			faulty := k == 1
			switch {
			case sc.slow > 0 && faulty:
				faulted.SetLatency(sc.slow, 0)
			case sc.slow > 0:
				faulted.SetLatency(0, 0)
			case faulty:
				hooks = append(hooks, b.pauseHooks(tgt, st, pauses)...)
			}
			if faulty {
				label = fmt.Sprintf("%s %d/%d", fault, r+1, n)
			}
			var rb []int64
			hooks = append(hooks, b.callsHook(tgt, &calls[k])...)
			hooks = append(hooks, hook{at: 1, name: "read byte counters", fn: func() { rb = proxyBytes(tgt) }})
			seg, err := s.measure(ctx, b.o.warmup, each, hooks, b.progressLabel(pol, s, each, label))
			b.con.endProgress()
			if err != nil {
				return nil, err
			}
			segs[k] = append(segs[k], seg)
			for m, v := range rb {
				bytes[k][m] += v
			}
		}
	}
	var rows [2]*result
	for k, s := range sessions {
		var bs []int64
		if tgt.faultable() {
			bs = bytes[k]
		}
		r := newResult(pol, segs[k], bs, st.BandwidthCap, true)
		r.WatchEvents = s.events.Load()
		r.LeaseKeepAlives = s.keepAlives.Load()
		r.Leader = b.currentLeader(ctx, tgt)
		if sc.pauses && r.Requests > 0 {
			r.ProxyCallsPerRequest = float64(calls[k]) / float64(r.Requests)
		}
		rows[k] = r
	}
	for k, name := range []string{pol.name + " (healthy)", pol.name} {
		r := rows[k]
		b.con.printf("%-16s %7d requests %6d errors %9.1f req/s  p99 %s ms  max/mean share %.2f\n",
			name, r.Requests, r.Errors, r.ThroughputRPS, fmtMS(r.LatencyMS.P99), r.MaxOverMean)
	}
	if sc.pauses {
		b.rep.GCPauses = &pauseCheck{Policy: pol.name, HealthyP999MS: rows[0].LatencyMS.P999,
			HealthyCallsPerRequest: rows[0].ProxyCallsPerRequest, Healthy: rows[0]}
	} else {
		b.rep.SlowMember = &slowCheck{Policy: pol.name, HealthyP99MS: rows[0].LatencyMS.P99, Healthy: rows[0]}
	}
	return rows[1], nil
}

// runPolicy measures one policy. A policy whose clients cannot be built
// is left out with the reason; a nil result and nil error mean that.
// healthy runs it with the scenario's slow member healed.
func (b *bench) runPolicy(ctx context.Context, tgt *target, st *setup, pol *policy, healthy bool) (*result, error) {
	if err := b.reset(ctx, tgt, st); err != nil {
		return nil, err
	}
	name := pol.name
	if healthy {
		tgt.proxies[st.FaultMember].SetLatency(0, 0)
		name += " (healthy)"
	}
	s, err := newSession(ctx, pol, tgt, b.o.scenario, b.o)
	if err != nil {
		b.skip(pol, err.Error())
		return nil, nil
	}
	defer s.close()
	var bytes []int64
	var calls int64
	hooks := append(b.hooks(tgt, st), b.pauseHooks(tgt, st, b.pauseRand())...)
	hooks = append(hooks, b.callsHook(tgt, &calls)...)
	hooks = append(hooks, hook{at: 1, name: "read byte counters", fn: func() { bytes = proxyBytes(tgt) }})
	label := ""
	if healthy {
		label = "healthy"
	}
	seg, err := s.measure(ctx, b.o.warmup, b.o.duration, hooks, b.progressLabel(pol, s, b.o.duration, label))
	b.con.endProgress()
	if err != nil {
		return nil, err
	}
	r := newResult(pol, []*segment{seg}, bytes, st.BandwidthCap, false)
	r.WatchEvents = s.events.Load()
	r.LeaseKeepAlives = s.keepAlives.Load()
	if b.o.scenario.storm {
		r.Writes = writeStats([]*segment{seg}, false)
	}
	r.Leader = b.currentLeader(ctx, tgt)
	b.con.printf("%-16s %7d requests %6d errors %9.1f req/s  p99 %s ms  max/mean share %.2f\n",
		name, r.Requests, r.Errors, r.ThroughputRPS, fmtMS(r.LatencyMS.P99), r.MaxOverMean)
	if b.o.scenario.pauses && r.Requests > 0 {
		r.ProxyCallsPerRequest = float64(calls) / float64(r.Requests)
		b.con.printf("%-16s p99.9 %s ms, %.4f calls at the members per request\n", name, fmtMS(r.LatencyMS.P999), r.ProxyCallsPerRequest)
	}
	return r, nil
}

// currentLeader is the leader's index after a run, -1 when unknown.
func (b *bench) currentLeader(ctx context.Context, tgt *target) int {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	i, err := tgt.leader(lctx)
	if err != nil {
		return -1
	}
	return i
}

// runRounds runs the policies in turns (A B A B ...) on clients built
// once per policy, so that machine noise and the cluster's own drift hit
// every policy alike.
func (b *bench) runRounds(ctx context.Context, tgt *target, st *setup, pols []*policy) ([]*result, error) {
	if err := b.reset(ctx, tgt, st); err != nil {
		return nil, err
	}
	var (
		sessions []*session
		live     []*policy
	)
	defer func() {
		for _, s := range sessions {
			s.close()
		}
	}()
	for _, pol := range pols {
		s, err := newSession(ctx, pol, tgt, b.o.scenario, b.o)
		if err != nil {
			b.skip(pol, err.Error())
			continue
		}
		sessions = append(sessions, s)
		live = append(live, pol)
	}
	n, each := rounds(b.o.duration)
	b.con.printf("%d rounds of %v per policy\n", n, each)
	segs := make([][]*segment, len(sessions))
	bytes := make([][]int64, len(sessions))
	for i, s := range sessions {
		// Warm-up, once per policy, unmeasured.
		if b.o.warmup > 0 {
			if _, err := s.measure(ctx, 0, b.o.warmup, nil, nil); err != nil {
				return nil, err
			}
		}
		bytes[i] = make([]int64, len(tgt.endpoints))
	}
	for r := range n {
		// The job storm's history would grow all run long: compact it
		// between rounds, outside the measured time.
		if r > 0 && b.o.scenario.storm && tgt.compact != nil {
			if err := tgt.compact(ctx); err != nil {
				return nil, err
			}
		}
		for i, s := range sessions {
			label := fmt.Sprintf("round %d/%d", r+1, n)
			// The bytes are read when the round ends, before the requests
			// still in flight finish, so that they match its length.
			var rb []int64
			hooks := append(b.hooks(tgt, st), hook{at: 1, name: "read byte counters", fn: func() { rb = proxyBytes(tgt) }})
			seg, err := s.measure(ctx, 0, each, hooks, b.progressLabel(live[i], s, each, label))
			b.con.endProgress()
			if err != nil {
				return nil, err
			}
			segs[i] = append(segs[i], seg)
			for m, v := range rb {
				bytes[i][m] += v
			}
		}
	}
	var rs []*result
	for i, pol := range live {
		var bs []int64
		if tgt.faultable() {
			bs = bytes[i]
		}
		r := newResult(pol, segs[i], bs, st.BandwidthCap, true)
		r.WatchEvents = sessions[i].events.Load()
		r.LeaseKeepAlives = sessions[i].keepAlives.Load()
		if b.o.scenario.storm {
			r.Writes = writeStats(segs[i], true)
		}
		r.Leader = b.currentLeader(ctx, tgt)
		b.con.printf("%-16s %7d requests %6d errors %9.1f req/s  p99 %s ms  max/mean share %.2f\n",
			pol.name, r.Requests, r.Errors, r.ThroughputRPS, fmtMS(r.LatencyMS.P99), r.MaxOverMean)
		rs = append(rs, r)
	}
	return rs, nil
}

// calibrate measures the bytes one request of each kind moves through a
// proxy (both directions) with a plain client and no cap, and sets the
// cap so that the busiest client offers capFactor times what one member
// can carry.
func (b *bench) calibrate(ctx context.Context, tgt *target, st *setup) error {
	o, sc := b.o, b.o.scenario
	if err := b.reset(ctx, tgt, st); err != nil {
		return err
	}
	var drv driver
	if tgt.v2 {
		tr := newHTTPTransport(1)
		c, err := client.New(client.Config{Endpoints: tgt.endpoints[:1], Transport: tr})
		if err != nil {
			return err
		}
		drv = &v2Driver{kapi: client.NewKeysAPI(c), prefix: tgt.prefix[:len(tgt.prefix)-1], closeFn: func() {}, tr: tr}
	} else {
		cli, err := clientv3.New(v3Config(tgt.endpoints[:1], &attribution{}))
		if err != nil {
			return err
		}
		drv = &v3Driver{cli: cli, prefix: tgt.prefix}
	}
	defer drv.close()
	p := tgt.proxies[0]
	value := string(podValue(7))
	perOp := map[op]float64{}
	for o, n := range map[op]int{opGet: 50, opList: 3, opPut: 20} {
		// One request first, so that connection setup is not counted.
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := drv.do(rctx, o, tgt.keys[0], value, &probe{})
		cancel()
		if err != nil {
			return err
		}
		before := proxyBytes(tgt)[0]
		for i := range n {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := drv.do(rctx, o, tgt.keys[i%len(tgt.keys)], value, &probe{})
			cancel()
			if err != nil {
				return err
			}
		}
		s := p.Stats()
		perOp[o] = float64(s.BytesToClient+s.BytesToServer-before) / float64(n)
	}
	st.BytesPerRequest = map[string]float64{}
	perReq := 0.0
	for op, bts := range perOp {
		st.BytesPerRequest[op.String()] = round1(bts)
		perReq += sc.mix.share(op) * bts
	}
	weights := sc.weights(o.clients)
	busiest := slices.Max(weights)
	// Every update reaches every client's watch: about a Get's answer each.
	watchBytes := 0.0
	if sc.watch {
		watchBytes = sc.rate * sc.mix.put * perOp[opGet]
	}
	st.OfferedBusy = math.Trunc(sc.rate*busiest*perReq + watchBytes)
	st.OfferedTotal = math.Trunc(sc.rate*perReq + float64(o.clients)*watchBytes)
	st.BandwidthCap = int64(st.OfferedBusy / sc.capFactor)
	b.note("%s: a list moves %.0f kB, a get %.1f kB; busiest client offers %s, all clients %s; cap %s per member (%.2fx the busiest client's load over one member, %.2fx the total over all %d)",
		map[bool]string{false: "v3", true: "v2"}[tgt.v2], perOp[opList]/1e3, perOp[opGet]/1e3,
		mbps(st.OfferedBusy), mbps(st.OfferedTotal), mbps(float64(st.BandwidthCap)),
		st.OfferedBusy/float64(st.BandwidthCap), st.OfferedTotal/float64(st.BandwidthCap*int64(len(tgt.endpoints))), len(tgt.endpoints))
	return nil
}

// progressLabel returns the tick function that shows a run's progress.
func (b *bench) progressLabel(pol *policy, s *session, d time.Duration, label string) func(time.Duration) {
	// On a terminal the line is rewritten every second from the start;
	// in a log, a line every 5 s is enough.
	every, last := 5*time.Second, time.Duration(0)
	if b.con.tty {
		every, last = time.Second, -time.Second
	}
	s.done.Store(0)
	s.failed.Store(0)
	return func(el time.Duration) {
		if el-last < every {
			return
		}
		last = el
		head := b.o.scenario.name + " " + pol.name
		if label != "" {
			head += " " + label
		}
		b.con.progress(fmt.Sprintf("%s %3.0fs/%.0fs %8d requests %6d errors",
			head, el.Seconds(), d.Seconds(), s.done.Load(), s.failed.Load()))
	}
}

// console serialises stderr between the progress line and notes. On a
// terminal the progress line is rewritten in place; elsewhere (CI logs)
// it is a new line every few seconds.
type console struct {
	mu   sync.Mutex
	w    io.Writer
	tty  bool
	open atomic.Bool // a progress line is on screen without its newline
}

func newConsole(w io.Writer) *console {
	c := &console{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			c.tty = true
		}
	}
	return c
}

func (c *console) progress(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tty {
		fmt.Fprintf(c.w, "\r\033[K%s", line)
		c.open.Store(true)
		return
	}
	fmt.Fprintln(c.w, line)
}

// endProgress ends a progress line left open.
func (c *console) endProgress() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open.Swap(false) {
		fmt.Fprint(c.w, "\r\033[K")
	}
}

func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open.Swap(false) {
		fmt.Fprint(c.w, "\r\033[K")
	}
	fmt.Fprintf(c.w, format, args...)
}
