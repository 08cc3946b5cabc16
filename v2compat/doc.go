// Package v2compat balances the requests of an etcd v2 client over the
// members of the cluster, request by request, instead of pinning one member
// until it fails.
//
// The v2 client (go.etcd.io/etcd/client/v2, and github.com/coreos/etcd/client
// before it) shuffles its endpoints once and sends everything to the first
// one that answers. Its Config.Transport, though, sees every request: a
// Transport from this package rewrites each request's scheme and host to
// the member the picker engine (package picker) finds cheapest at that
// moment, from latency and requests in flight. Nothing else in the client
// changes, so the package fits every vintage of the v2 client, including
// the one Kubernetes 1.7 vendored.
//
// Wiring, with the endpoints given to both:
//
//	tr, err := v2compat.New(&http.Transport{...}, endpoints)
//	if err != nil { ... }
//	defer tr.Close()
//	c, err := client.New(client.Config{Endpoints: endpoints, Transport: tr})
//
// Package v2compat/v2client does this for go.etcd.io/etcd/client/v2 and keeps
// the endpoint set in step with the client's Sync and SetEndpoints.
//
// A process with many clients of one cluster (an apiserver builds one per
// resource) should give them one Transport, so that in-flight counts are
// per member and the leader is polled once: Shared hands out one per
// (endpoints, TLS files) and closes it when the last user releases it.
//
// # Classification
//
//   - GET under /v2/keys is a read: any member serves it from its own store.
//   - GET with quorum=true is a linearizable read. It goes through raft
//     wherever it enters, but the member that received it builds the
//     answer, so it is spread like any read rather than sent to the leader
//     (which would rebuild the hot spot for clients that read with quorum,
//     such as an apiserver with --etcd-quorum-read).
//   - GET with wait=true is a watch, a long poll for one event: it is a
//     picker.Stream, spread by the number of open watches, never measured.
//   - PUT, POST and DELETE under /v2/keys are writes: they prefer the leader,
//     which saves the follower's forwarding hop. The leader is looked up
//     with GET /v2/members/leader every 5 s ±20 % (WithLeaderPollInterval) and matched to an endpoint by its client URLs or, when the
//     endpoints are other names (proxies, load balancers), by member ID
//     from GET /v2/stats/self.
//   - Anything else (/v2/members, /version, /v2/stats) goes to any member.
//
// # Measurement
//
// Each attempt sent to a member takes one picker ticket, handed back once:
// when the response body is read to EOF or closed, whichever comes first,
// or when the attempt fails. Until then the request counts in flight at its
// member, so the engine sees how much each member still has to deliver.
// The latency sample is the time to the response headers
// (picker.Outcome.Latency), not the time the caller took to read the body.
// In Stats.Members, Picks therefore counts one per attempt, plus
// the leader lookups.
//
// Dial errors, resets (also in the middle of a body), header timeouts (see
// WithHeaderTimeout: GETs only, never writes) and 5xx answers count against
// the member; a request the
// caller canceled (req.Cancel, its context, CancelRequest, or closing the
// body early) does not; 4xx answers, such as key not found (404) or
// compare failed (412), are the member doing its job.
//
// # Members that have just failed
//
// Such a failure also marks the member as just failed for a second
// (picker.Picker.Mark): every request avoids it meanwhile, unless no other
// member is eligible (picker.Request.Avoid). A good answer from the member
// ends the mark at once. The engine
// charges unary failures to the member's cost, but it spreads watches by
// their count alone and ejects a member only after several failures in a
// row; a member that has just crashed has no watch left, so without the
// mark the v2 client's immediate retry of each watch the crash cut would go
// straight back to it, and fail again.
//
// # No retries
//
// The transport never sends again anything that may have reached a member:
// the v2 client already retries on the next endpoint whatever is not
// one-shot, and the one-shot requests (Create, Delete) must be applied at
// most once. The only exceptions are reads, and only reads: the
// monotonic-read guard re-sends those that a member answered stale, and
// hedged reads send a copy of those that are slow.
//
// # Hedged reads
//
// Opt-in (WithHedgedReads): a GET without quorum=true or wait=true that has
// had no response headers after its member's p95 is sent once more, to
// another member, within a token bucket of a share of the reads; the first
// answer wins and the other attempt is canceled without blame, so that a
// member in a GC pause or a defrag costs a read about its p95, not the
// pause.
//
// # Monotonic reads
//
// Every v2 answer carries X-Etcd-Index. Since reads now go to different
// members, a read could return an older state than one the client has
// already seen. The guard (on by default, see WithMonotonicReads for its cost)
// re-issues such reads on other members and finally as a quorum read.
//
// # Clock steps
//
// Holds (the marks above) and latencies are measured on the engine's time
// (picker.Picker.Now), which never goes backwards: under Go 1.8, whose
// time.Now has no monotonic reading, an NTP step would otherwise stretch a
// mark by the size of a step back or make a latency negative. A step back
// ends every mark early instead (see picker.Config.Clock).
//
// # Cancellation and TLS
//
// Each attempt is a shallow copy of the caller's request with a new URL, so
// req.Cancel, the context, headers and body stay as they were: every
// vintage of the v2 client cancels through req.Cancel and then waits for
// RoundTrip to return. CancelRequest maps the caller's request to the copy
// in flight and cancels that on the inner transport. The inner transport
// dials the rewritten host, so TLS certificates are verified against the
// member actually dialed.
//
// # Old Go
//
// The package imports only the standard library and package picker, in Go
// that a Go 1.8 toolchain compiles against the Go 1.8 standard library, so
// that both can be copied into the vendor folder of a 2017 tree.
package v2compat
