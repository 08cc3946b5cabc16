// Package sim is a deterministic discrete-event simulation that compares the
// selection policies of package picker on a model of an etcd cluster and its
// clients. It drives the real engine through its public API, in virtual time:
// every client owns its own *picker.Picker (as separate processes would),
// built with a Clock that reads the simulation's clock and a seeded
// picker.NewSource. Nothing sleeps, nothing reads the wall clock and no
// goroutine is started, so a run is exactly reproducible from its seed.
//
// # The model
//
// Clients run closed request loops: each loop thinks for an exponentially
// distributed time, sends one request, waits for the answer or for the
// deadline, and thinks again. Members have a fixed number of workers and one
// FIFO queue each; a request's service time is exponential, its mean the
// member's mean (times a slow-down factor while the member is slow). The
// think time is derived from the target load (see Scenario.ThinkTime), so
// that the cluster runs at about 60% of its capacity.
//
// A scenario with a Mix (lists, slow-followers, saturated) adds a leader
// and request classes: writes, which go to the leader and slow it down the
// more of them it takes; range reads, whose large answers share the
// member's link; and point reads. Their CPU demand is Erlang-4 rather than
// exponential. Options.Estimates and Options.Leader choose how the classes
// and the leader are described to the engine, to compare per-class
// estimates with one shared or size-normalised estimate, and the reserve
// rule with cost-based avoidance.
//
// A request that gets no answer within the deadline is handed back to the
// engine as DeadlineExceeded and counts as an error at the full deadline.
// The member is not told: a timed-out request still sitting in a member's
// queue is served in full when a worker reaches it, as etcd does (it cannot
// tell that the client has gone), so overload is not relieved by timeouts.
//
// Faults, each on one member for a window of virtual time (see Fault):
//
//   - Slow: service times are multiplied by a factor (work already in
//     service keeps the duration it started with).
//   - Blackhole: the network path to the member swallows everything. Requests
//     sent to it and answers it produces are held; the client sees nothing
//     until its deadline. When the window ends, held answers are delivered
//     (clients that gave up ignore them), held requests whose client has given
//     up are dropped, and the others join the queue.
//   - Remove: the member is gone (connection refused). A request sent to it
//     fails with Failed after 0.1 ms; when the window starts, everything the
//     member holds fails the same way.
//
// Scale (ScaleScenarios): 1000 clients with one loop each and their own
// engines, each sending ScaleRate requests a second; the measured period is cut
// into phases (Scenario.Phase) in which one member's speed changes, and
// each phase reports its p99, its shares and how much the shares oscillate
// from one second to the next (PhaseStats, Oscillation).
//
// Hedged reads (Options.Hedge): a read with no answer after its member's
// p95 is sent once more to another member, within a token-bucket budget;
// the gc-pauses scenario (Scenario.Pauses) gives one member GC-like stalls
// to measure them against (HedgeStats).
//
// Every ticket is handed back to the engine exactly once; a run ends after
// the measured period once every request issued has been handed back, and
// reports the count it could not hand back as Result.Lost (always 0 unless
// the simulation is broken).
//
// # Use
//
//	sc, _ := sim.Lookup("slow-member")
//	rep, err := sim.RunScenario(sc, 1, picker.Policies(), sim.Options{})
//	if err != nil { ... }
//	for _, r := range rep.Results {
//		fmt.Println(r.Policy, r.Latency.P99, r.MemberShare)
//	}
//
// or from the command line:
//
//	go run ./internal/sim/cmd/simulate -scenario slow-member -seed 1 [-json]
package sim
