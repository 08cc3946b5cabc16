// Command bench measures how etcd clients spread their requests over the
// members of a cluster, and what that costs or saves in latency, throughput
// and errors, under the conditions of the incident that started this project
// (see the design notes): one apiserver taking all the traffic, its etcd
// client pinned to one member, that member saturated while four idle.
//
// Run it from the repository root:
//
//	go run ./examples/bench                      # the incident, about two minutes
//	go run ./examples/bench -scenario slow-member -duration 10s
//	go run ./examples/bench -scenario overhead -policies v3-roundrobin,etcdbalance
//	go run ./examples/bench -json out.json -plots plots/
//	go run ./examples/bench -endpoints 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379
//
// Without -endpoints it starts a cluster of real etcd 3.6 members in this
// process (package internal/etcdcluster), each behind a fault proxy on its
// client port, and for the v2 rows a separate cluster of etcd 3.5 member
// processes that serve the v2 API (package internal/v2cluster). Each
// scenario starts its clusters once and runs every policy on them in turn,
// with the proxies' faults and counters reset in between.
//
// For every policy it prints one row: requests, errors, throughput, p50,
// p99 and p99.9 latency, the share of the requests each member served, and
// the largest share over the mean share (1.0 is perfectly even; 5.0 with
// five members is everything on one). -json writes the same rows as JSON,
// -plots writes SVG charts of the shares and the latency distributions.
//
// Scenarios (-scenario):
//
//   - incident: 3 clients for 3 apiservers on 5 members. After the load
//     balancer in front of the apiservers lost two of them, one apiserver
//     takes 80% of the requests; the other two keep a trickle and their
//     watches. The mix is the apiserver's: Gets of single pods, Lists of the
//     whole /registry/pods/default/ prefix (2000 keys of 1 KiB), a few
//     updates, and one watch per client on the prefix. Reads are
//     linearizable, as the apiserver's quorum reads are. Every member's proxy
//     caps its bandwidth so that one member cannot carry the busy client's
//     load while the cluster as a whole carries all of it at about half
//     its capacity.
//   - skewed-clients: the load balancer failure. One client carries the
//     whole load, Gets and a few updates at a steady rate, with the
//     members' bandwidth capped as in incident (in-process members share
//     the machine's cores, so only a cap of its own makes one member run
//     out of anything).
//   - slow-member: one follower's proxy adds 20 ms in each direction, so
//     its round trips take about 40 ms longer. etcdbalance runs in
//     alternating rounds with the member slowed and healed (two sets of
//     clients, a warm-up before each round): the healed rounds give the
//     tail the same clients get from a healthy cluster, which the slowed
//     rounds (the etcdbalance row) are compared with ("slow_member" in
//     the JSON).
//   - blackhole: one follower's proxy swallows every byte, connections left
//     open, for the middle third of each policy's run.
//   - job-storm: a Kubernetes job storm at full speed, policies in
//     alternating rounds: 25% creates (Txn: mod_revision == 0, then put),
//     40% compare-and-swap updates (Txn on the last mod_revision seen, then
//     put; on a lost compare a re-read and one retry), 5% lease grants,
//     30% Gets; each client keeps 4 leases alive and watches the prefix.
//     Only clientv3 rows run it; -policies all adds etcdbalance-noleader
//     (WithLeaderWrites(false)). Write throughput and write p99 are
//     compared with v3-roundrobin's ("job_storm" in the JSON).
//   - gc-pauses: one follower's proxy pauses (holds every byte, connections
//     open) for 100–300 ms at exponential gaps of 2 s on average, as a
//     member in a GC pause; Gets and 5% updates at 1500 requests a second,
//     the v3 Gets serializable. -policies all adds etcdbalance-hedged. Each
//     row also reports p99.9 and the gRPC calls that reached the members
//     per request ("proxy_calls_per_request" in the JSON): the hedged
//     copies are that number's excess over the etcdbalance row's. The
//     etcdbalance-hedged row runs in rounds that alternate with healthy
//     ones (no pause, clients of their own), and its p99.9 is judged
//     against theirs ("gc_pauses" in the JSON: issue 14's goal is ≤ 2×
//     for ≤ 5% extra reads).
//   - overhead: a healthy cluster at full speed; policies run in
//     alternating rounds and the throughput ratio of etcdbalance to
//     v3-roundrobin is the median of the per-round ratios.
//
// The paced scenarios (all but overhead) offer a fixed rate, split over
// the clients by weight and sent by -concurrency closed-loop workers per
// client: a client whose member is saturated has all its workers stuck and
// falls behind, as an apiserver does. The v2 rows read with quorum=false,
// the default of the apiserver of the incident (1.7).
//
// Every request has a 1 s deadline; one that misses it, or fails in any
// other way, counts as an error. Latency percentiles are over every
// request, failed ones included at the time they failed, by nearest rank.
// Throughput counts the requests that succeeded.
//
// Policies (-policies):
//
//   - v3-pinned: clientv3 on grpc's pick_first with shuffleAddressList, the
//     stock v2 client's behaviour (shuffle the endpoints once, then send
//     everything to the first one until it fails) expressed in v3 terms.
//   - v3-roundrobin: stock clientv3 (round_robin).
//   - v3-leastrequest: grpc-go's least_request_experimental.
//   - etcdbalance: clientv3 from etcdbalance.New.
//   - etcdbalance-noleader: the same with WithLeaderWrites(false); in
//     "all" for job-storm only.
//   - etcdbalance-hedged: the same with WithHedgedReads(0.05); in "all"
//     for gc-pauses only.
//   - v3-1.7-stock, v3-1.7-patched: the clientv3 v3.1.5 on grpc v1.0.4 that
//     Kubernetes 1.7 vendors, stock (pinned) and with the etcd3 patch of
//     examples/apiserver-v1.7, reading serializably as 1.7 does. Each client
//     is a process of the legacy module's vintage command (vintage.go).
//   - v2-stock: the etcd v2 client (go.etcd.io/etcd/client/v2), pinned.
//   - v2-etcdbalance: the v2 client from v2compat/v2client.New.
//
// The v2 rows run on the etcd 3.5 cluster over HTTP/JSON, so they are
// reported in a table (and a JSON list, "v2_results") of their own: they
// are not comparable with the v3 rows.
//
// A request's member is the one that answered it, recorded the same way
// for every policy: for v3 a chained unary interceptor reads the peer of
// the attempt that succeeded (for the 1.7 rows, the member ID in the
// response header), for v2 the HTTP transport under the client records the
// host of every answered request.
//
// -reserve-ratio and -follower-reads=false pass picker.Config.ReserveRatio
// (WithPickerConfig) and WithFollowerReads(false) to the etcdbalance rows,
// for diagnosis.
//
// -events prints each etcdbalance row's event log to stderr when the row
// ends: every client's balancer events (members ejected, probed, restored,
// leader changes...; see picker.Event), numbered as in the tables, with
// the scenario's faults between them, in seconds since the clients were
// built.
//
// -seed fixes the request mix and the keys; grpc's shuffle (v3-pinned),
// the v2 client's shuffle and the balancers draw their own randomness, so
// which member a pinned client lands on changes from run to run.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes of run.
const (
	exitOK    = 0
	exitFail  = 1 // the benchmark could not run (cluster, I/O)
	exitUsage = 2 // bad flags
)

// run is the whole program: it parses args, runs the scenario, writes the
// tables to stdout and progress and notes to stderr, and returns the exit
// code. Tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		switch err {
		case errHelp:
			return exitOK
		case errPrinted:
		default:
			fmt.Fprintf(stderr, "bench: %v\nRun with -h for the flags.\n", err)
		}
		return exitUsage
	}
	b := newBench(opts, stdout, stderr)
	defer removeVintageBuild()
	if err := b.run(ctx); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "bench: interrupted: clusters closed, no results written")
		} else {
			fmt.Fprintf(stderr, "bench: %v\n", err)
		}
		return exitFail
	}
	return exitOK
}
