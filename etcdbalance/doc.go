// Package etcdbalance is a gRPC load balancer for etcd v3 clients
// (go.etcd.io/etcd/client/v3) that sends every request to the member that
// is cheapest now, so that no client ever pins its traffic to one member.
//
// The stock clientv3 balancer is round_robin: it ignores how busy or slow
// each member is and keeps sending its share of requests to a member that
// has stopped answering (with one member of three black-holed, about a
// third of its Gets run out their deadline). This package replaces it with the engine in package picker: by default power
// of two choices over a peak-EWMA latency × (requests in flight + 1) cost,
// with stall detection, ejection of failing members, slow start for new
// and recovered ones, and a periodic reshuffle (see picker.Config for the
// defaults: decay 10s, default RTT 30ms, slow start 5s, ejection after 5
// consecutive failures for 1s doubling to 30s, reshuffle every 30s ± 20%).
//
// # Use
//
// New is a drop-in for clientv3.New:
//
//	cli, err := etcdbalance.New(clientv3.Config{Endpoints: eps})
//
// Code that builds its own client appends DialOptions:
//
//	cfg.DialOptions = append(cfg.DialOptions, etcdbalance.DialOptions()...)
//	cli, err := clientv3.New(cfg)
//
// Stats returns each member's picks, requests in flight, open streams,
// latency estimate and ejection state for a client.
//
// # How a call is routed
//
// The balancer is registered with grpc as Name ("etcdbalance"). It is
// built, like grpc-go's own leaf policies, on balancer/endpointsharding
// with one pickfirst child per member, and reads the resolver's Endpoints
// (clientv3's resolver sends nothing else). For every call, the picker
// classifies the method (Classify: Read, Write, Stream or Other), asks the
// engine for a member among those whose connection is READY, and hands
// the call to that member's child. When the call ends, its outcome goes
// back to the engine: success, or an error that blames the member
// (Unavailable: Failed; DeadlineExceeded: charged at least the call's
// deadline), or one that does not (Canceled; application errors such as
// NotFound or a failed compare count as answers). Streams (Watch,
// LeaseKeepAlive, Snapshot) are spread by their own count and are done
// when the stream ends. Client.SetEndpoints and Client.Sync change the
// member set at runtime, on the same connection.
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
// new one later. The engine, with its statistics, lives in a registry
// under a key that New or DialOptions puts into the balancer's JSON config
// (LBConfig.Client), so a rebuilt balancer finds it again. The entry is
// freed when the client is closed (New) or when the dial options become
// garbage (DialOptions).
//
// Leader-aware routing (writes to the leader, reads to followers, learners
// kept out) is not done yet; the engine's tags and WithMember are there
// for it.
package etcdbalance
