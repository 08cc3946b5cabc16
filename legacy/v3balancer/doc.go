// Package v3balancer balances the etcd v3 client of the Kubernetes 1.7
// vintage (github.com/coreos/etcd/clientv3 v3.1.5 on grpc v1.0.4) over the
// members of a cluster, call by call, with the picker engine.
//
// That clientv3 wires its own simpleBalancer into grpc's old Balancer API;
// its Get returns the first member that came up for every call, so every
// client pins one member. A Balancer implements the same interface
// (Start, Up, Get, Notify, Close) and picks per call instead:
//
//   - serializable reads go to the cheapest caught-up follower: the leader
//     (it carries every write and all replication) is held in reserve, and
//     takes reads only while every follower is measurably slower, plus a
//     probe at most once a second (picker.Config.ReserveRatio); members
//     whose applied index lags the leader's by more than 1000 entries serve
//     only when every other member lags too;
//   - linearizable reads are spread the same way, lagging members included
//     (etcd makes them wait for the leader's index anyway);
//   - writes (Put, DeleteRange, Txn, Compact, LeaseGrant, LeaseRevoke) go to
//     the leader when it is known;
//   - streams (Watch, LeaseKeepAlive) are spread by their own count.
//
// grpc v1.0.4 shows Balancer.Get only the call's context. UnaryInterceptor
// and StreamInterceptor wrap the interceptor clientv3 already installs and
// leave one small record in that context: the kind of call, and room for the
// ticket, so that the outcome of the call (which the interceptor sees and put
// does not) reaches the engine. Calls without the record are picked as
// "other" and reported as answered when put runs.
//
// Every Balancer with the same endpoints and TLS key shares one engine
// (picker.Picker) in the process, so the 40–50 storage clients of an
// apiserver count requests in flight per member, not per client. The engine
// learns the leader and each member's applied index from Status, asked about
// once a second of every member over a connection a client already has.
//
// The package is plain Go 1.8 and imports only the standard library, picker,
// grpc and golang.org/x/net/context, so that it can be vendored into a
// Kubernetes 1.7 tree; see examples/apiserver-v1.7 for the patch.
package v3balancer
