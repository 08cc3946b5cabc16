// Package etcdbalance is a gRPC load balancer for etcd v3 clients
// (go.etcd.io/etcd/client/v3) that sends every request to the member that
// is cheapest now, so that no client ever pins its traffic to one member,
// and that knows the cluster: writes go to the leader, reads to the
// followers, learners and lagging members get only what they can serve,
// and a client's reads never go back in time.
//
// The stock clientv3 balancer is round_robin: it ignores how busy or slow
// each member is and keeps sending its share of requests to a member that
// has stopped answering (with one member of three black-holed, about a
// third of its Gets run out their deadline). This package replaces it with
// the engine in package picker: by default power of two choices over a
// peak-EWMA latency × (requests in flight + 1) cost, with stall detection,
// ejection of failing members, slow start for new and recovered ones, and
// a periodic reshuffle (picker.Config states the defaults).
//
// # Use
//
// New is a drop-in for clientv3.New; it switches everything on:
//
//	cli, err := etcdbalance.New(clientv3.Config{Endpoints: eps})
//
// Code that builds its own client appends DialOptions, then starts the
// cluster view with Attach once the client exists (the options exist
// before the client, so they cannot start it themselves):
//
//	cfg.DialOptions = append(cfg.DialOptions, etcdbalance.DialOptions()...)
//	cli, err := clientv3.New(cfg)
//	...
//	stop, err := etcdbalance.Attach(cli) // stops by itself when cli closes
//
// Without Attach such a client has no cluster view: it spreads every call
// by load alone over the connected members (learners included, which
// refuse most calls), and the monotonic guard re-issues a stale read as a
// linearizable one.
//
// Both take Options: WithPickerConfig tunes the engine (picker.Config, one
// struct for every knob, with its defaults and limits), the others switch
// the cluster-aware rules below on or off.
//
// Stats returns each member's picks, requests in flight, open streams,
// latency estimate, ejection state and role (leader, learner, lagging);
// ClusterView returns the view (leader, learners, applied indexes, probe
// rounds completed) and the monotonic guard's counters.
//
// # Routing rules
//
// Which members may serve a call, and which are preferred among those
// (always the cheapest by the engine's cost within the preferred set):
//
//	call                                  may be served by                  preferred
//	------------------------------------  --------------------------------  ------------------------------
//	write (Put, DeleteRange, Txn,         voting members                    the leader
//	  Compact, LeaseGrant, LeaseRevoke,
//	  member/auth changes, MoveLeader)
//	linearizable Range (the default Get)  voting members                    one key: followers; the leader
//	                                                                        only if every follower is 1.5×
//	                                                                        slower, or none is up (and a
//	                                                                        probe now and then); a List
//	                                                                        (range_end set): the cheapest,
//	                                                                        leader included (below)
//	serializable Range                    voting members and learners, but  as linearizable Range
//	                                      not members lagging > 1000
//	                                      entries, nor members known to be
//	                                      behind the client's revision
//	RangeStream (3.7)                     voting members, not lagging nor   as a List
//	                                      behind
//	Watch, LeaseKeepAlive, Lock,          voting members                    fewest open streams
//	  Campaign, Observe
//	Snapshot                              voting members, not lagging nor   fewest open streams
//	                                      behind (a backup misses nothing)
//	Status                                every member, learners too        cheapest
//	other (Authenticate, MemberList,      voting members                    cheapest
//	  LeaseTimeToLive, HashKV, Alarm,
//	  auth lookups, ...)
//
// Lists are not kept off the leader: their answers are large, so they are
// bound by the bandwidth of the link that carries them, and they queue
// behind each other there; n links drain them faster than n-1. Each goes
// to the member with the shortest queue of Lists by the engine's cost
// (picker.ClassRange), which keeps the leader's share of them near 1/n,
// and lower while its writes slow it down. Measured in the harness's
// incident scenario (README).
//
// Learners are kept out of every call that etcd refuses on a learner
// (anything but Status and serializable Range), whatever the options. A
// member is a learner, a leader or lagging as of the cluster view's last
// probe round that it answered; its role is recorded as soon as its probe
// answers. A member the view has not yet heard from counts as a possible
// learner: calls a learner refuses go to members known to be voters, and
// while none is known during the first probe round, they wait for the
// first one to answer; streams (which live for minutes) wait for the whole
// first round, so that no member is left out of them for good. After that round, members whose probes failed may
// take them when no known voter is connected (they are most likely busy
// voters). A call that a learner refuses and whose only possible members
// are down waits for one (within its deadline); when every member of the
// client is a learner, no member may ever serve it, so it goes to one,
// which refuses it at once with etcd's "rpc not supported for learner", as
// with stock clientv3. Lagging and behind members are avoided by
// serializable reads (picker.Request.Avoid): they serve one only when no
// other member is connected, since a stale answer beats none, and the
// guard re-checks it.
//
// Nothing that clientv3.New does itself (Authenticate, with Username and
// Password; the version check, with RejectOldCluster) waits for the view,
// which starts once clientv3.New has returned: such calls are spread by
// load alone, as stock spreads them.
//
// # Auth and TLS
//
// Username/Password and TLS client certificates (the CommonName as the
// user) work as with clientv3.New: the token that clientv3 fetches rides
// on every call of the connection, the view's probes included, and
// clientv3 refreshes it when it expires. Channels that clientv3 dials
// besides the client's own (Maintenance.Status(ctx, endpoint) and
// friends, 3.7's version check) get engines of their own: the client's
// engine, its statistics and its view always describe the client's own
// channel (see registry.go for how it is told apart).
//
// Per call, through the context: WithLeader sends a call to the leader
// (when known and connected), WithAnyMember drops the preferences and the
// lag and behind exclusions (not the learner rules), and WithMember pins a
// call to one member, bypassing every rule and the monotonic guard's
// re-issue.
//
// # The cluster view
//
// The view asks every member for its Status once per interval
// (DefaultViewInterval, 1s, spread by ± 20% so that clients started
// together do not probe in lockstep) on the client's own connection,
// pinned to each member in turn: no new connection per probe
// (clientv3's Maintenance.Status(ctx, endpoint) dials one on every call;
// the view does not use it). The probes of a round go out together; a
// member whose connection is down is skipped once its role is known; a
// probe that gets no answer within max(interval, 3s) fails.
//
// From the answers: the leader is the member that answered and reported
// itself leader, at the highest term among such claims (and none if
// another answer names a different leader at a newer term); learners are
// the members that say so; a member lags when its applied index trails
// the most advanced answer's by more than the lag threshold
// (DefaultLagThreshold, 1000 entries: far above the skew of a healthy
// follower, well below etcd's own 5000-entry limits). A leader change is
// seen by the first round that starts after it, so writes follow the new
// leader by the second round completed after the change. Until then they
// still go to the old leader if it is up, now a follower that forwards
// them, or, if it is down, to another voting member: nothing fails that
// etcd would have accepted through a follower.
//
// The probes are Status calls (a few hundred bytes, no disk access), one
// per member per second per client; they also keep the connection out of
// grpc's idle mode. The view stops when the client is closed.
//
// # Consistency
//
// Writes and linearizable reads are linearizable, as etcd makes them,
// whichever member serves them. Serializable reads may be stale, but with
// the monotonic guard (WithMonotonicReads, on by default) a client never
// gets a KV answer (Range, Put, DeleteRange, Txn) whose revision
// (Header.Revision) is lower than the highest revision it had observed
// when the call started, even when consecutive reads land on different
// members. Since writes raise that revision too, a serializable read also
// sees the client's own completed writes. Calls that overlap are not
// ordered with each other; watch events are not checked (a watch starts
// at the revision the caller asks for); the headers of other calls
// (leases, members, maintenance) carry the revision of whichever member
// answered and are not checked, though they count as observed; clients do
// not share what they have seen, even when built from one DialOptions
// value. A serializable RangeStream (3.7) learns its revision only with
// its last chunk: if that is below the floor, the stream ends with an
// Unavailable error instead of its end, and the member is held out as
// below.
//
// A write or a linearizable read answered below the revision the client
// had seen when it started proves that the cluster's revision went back (a
// restore from an older snapshot, or endpoints that now reach another
// cluster): the guard then restarts from that revision, logs a warning
// through grpclog and counts it (GuardStats.Resets), so a restore costs at
// most the re-issues of the reads in flight, never a re-issue per read
// forever.
//
// How: a chained unary interceptor (grpc.WithChainUnaryInterceptor, so
// that etcd's retry interceptor stays in place) records the highest header
// revision seen. Writes and linearizable reads cannot go back: they
// reflect at least everything committed when they start, and whatever the
// client has seen was committed. For a serializable Range the
// interceptor puts a marker into the call's context (gRPC's PickInfo
// carries the method and the context, not the request), so that the
// picker keeps it off lagging members and members known to be behind; if
// the answer is still below the revision seen when the call started, the
// member that gave it (grpc.Peer tells which) is held out of serializable
// reads (100ms, doubling while it stays behind up to the probe interval,
// or until a probe shows it has caught up) and the read is re-issued: on
// another member, then on the leader, then as a linearizable read, which
// cannot be below it.
//
// What it costs: an atomic load and compare-and-swap per call; four small
// allocations per serializable Range (the marker, and the record of the
// member that answered); and for each stale answer, one to three extra
// reads (ClusterView(cli).Guard counts them).
// A client that writes and reads serializably at once sees stale answers
// whenever a follower has not yet applied its latest write, and its reads
// drift toward the leader, which has; a client that only reads sees them
// only when the followers' applied indexes diverge. Switched off, a
// serializable read may return an older revision than an earlier one
// (TestLaggingMember shows thousands in 10,000 reads with one follower
// cut off from its peers).
//
// # Defaults, and how to switch each behaviour off
//
//	behaviour                                default                    option
//	---------------------------------------  -------------------------  --------------------------
//	cluster view (leader, learners, lag)     on, every 1s ± 20%         WithClusterView(-1) off
//	writes to the leader                     on                         WithLeaderWrites(false)
//	single-key reads to the followers        on, leader if followers    WithFollowerReads(false),
//	                                         1.5× slower                picker.Config.ReserveRatio
//	serializable reads on learners           on, when caught up         WithLearnerReads(false)
//	lagging members kept out of ser. reads   on, > 1000 entries         WithLagThreshold(-1) off
//	monotonic reads                          on                         WithMonotonicReads(false)
//	hedged serializable reads                off                        WithHedgedReads(0.05) on
//
// With the view off, nothing knows the leader, the learners or the lag:
// every call goes to the cheapest connected member (plain load-aware
// spreading).
//
// # Leader-aware writes: what they save
//
// A write sent to a follower is forwarded to the leader: one more hop
// (etcd issue #22268 / PR #22328 reported +8.7% throughput and −22.9% p99
// for an opt-in leader-aware balancer on a Kubernetes job-storm workload).
// BenchmarkWrites, 16 Puts in flight on a 3-member cluster in this
// process, measured on the development machine (2 cores, Go 1.26.8, no
// -race), after a warm-up, the two ways alternating, 6 runs of 4000 Puts
// each:
//
//	                      writes/s     p50          p99
//	leader routing (on)   6350–7540    1.5–2.0ms    8.9–11.0ms
//	spread (off)          3310–4570    2.4–3.6ms    15.1–22.2ms
//
// The members talk over loopback, so the hop itself costs next to
// nothing here; the gain has two other sources. A follower answers a
// forwarded write only once it has applied it, which it can do only when
// the leader's next message tells it the entry is committed; and all three
// members share the machine's two cores, so the follower's extra work
// (forwarding, waiting, answering) slows everyone. Across a real network
// the hop adds a round trip on top, while members with cores of their own
// feel the second effect less.
//
// # How a call is routed
//
// The balancer is registered with grpc as Name ("etcdbalance"). It is
// built, like grpc-go's own leaf policies, on balancer/endpointsharding
// with one pickfirst child per member, and reads the resolver's Endpoints
// (clientv3's resolver sends nothing else). For every call, the picker
// classifies the method (a read, a write, a stream or other, as in the
// table above), asks the engine for a member among those whose connection
// is READY, by the rules above (picker.Request's Exclude, Avoid, Prefer
// and Reserve over the view's tags and marks),
// and hands the call to that member's child. When the call ends, its
// outcome goes back to the engine: success; an error that blames the
// member (Unavailable, ResourceExhausted "too many requests", Internal,
// Unknown: charged as a slow sample, and counted toward ejection, so that
// a leader that refuses every write stops being preferred until it
// answers again and followers forward the writes); DeadlineExceeded,
// charged at least the call's deadline; or an error that does not blame
// it (Canceled; application answers such as NotFound, a failed compare,
// auth errors). memberFault in outcome.go holds the full table. Streams
// (Watch, LeaseKeepAlive, Snapshot) are spread by their own count and are
// done when the stream ends. Client.SetEndpoints and Client.Sync change
// the member set at runtime, on the same connection.
//
// While no member is READY, calls wait for one (clientv3 makes every call
// WaitForReady), except when the members' TLS certificates do not verify:
// then they fail at once with Unavailable and the handshake error, instead
// of running out their deadline and reporting only "context deadline
// exceeded", as stock clientv3 does.
//
// etcd's retry interceptor stays in place: a Range that fails with
// Unavailable is retried by clientv3, and the engine, having seen the
// failure, picks another member. Writes are never retried by this
// package.
//
// # Engines outlive balancers
//
// grpc closes a channel's balancer when the channel goes idle and builds a
// new one later. The engine, with its statistics and cluster view, lives
// in a registry under a key that New or DialOptions puts into the
// balancer's JSON config ({"client": key}, all that config carries), so a
// rebuilt balancer finds it again. The entry is freed when the client is closed (New) or when the
// dial options become garbage (DialOptions).
//
// # Events, logs and metrics
//
// The engine reports its state changes (ejections, probes, restores) to
// picker.Config.Events, set with WithPickerConfig; the cluster view and
// the monotonic guard add theirs (leader changed, learner seen or
// promoted, lagging, caught up, probe failed, read re-issued). New also
// logs them through clientv3.Config.Logger when one is set: state changes
// at Info, failures at Warn, each kind and member at most once per 10 s
// (for a DialOptions client, Attach logs them through cli.GetLogger(),
// which is clientv3's default logger when the config set none).
// Package metrics turns the same callback into Prometheus metrics.
package etcdbalance
