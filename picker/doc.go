// Package picker chooses which etcd member serves each request. It is the
// transport-neutral engine behind the gRPC balancer (package etcdbalance)
// and the v2 HTTP transport (package v2compat): it holds the endpoint set
// and per-endpoint statistics and knows nothing of gRPC, HTTP or etcd.
//
// The default policy, P2CEWMA, draws two distinct endpoints at random and
// sends the request to the cheaper one, where
//
//	cost = rtt × (outstanding + 1)
//
// and rtt is a peak EWMA of measured latency (a sample above the estimate
// replaces it; lower samples pull it down with time constant Config.Decay).
// On top of that:
//
//   - two candidates with as many requests in flight whose costs differ
//     by less than a small factor count as tied, and tied candidates are
//     taken in turn (the one issued a request of the class longest ago),
//     so that noise in equal members' estimates does not order them;
//   - unmeasured endpoints start at the median estimate of the measured
//     ones, and new or recovered endpoints get a slow start;
//   - an endpoint with requests in flight and no completion for longer than
//     its estimate is charged the age of that stall, so a black-holed member
//     is avoided before anything times out;
//   - an estimate that has not been sampled for a while drifts back toward
//     the median, so a member that was slow and has healed is tried again;
//   - blamed failures are charged as slow samples, and repeated ones eject
//     the endpoint with exponential backoff and a single probe; the picker
//     never ejects every endpoint;
//   - the order is reshuffled periodically with jitter, so round-robin
//     offsets, tie-breaks and pins never line clients up on one member;
//   - each request class (Request.Class: point read, range read, write)
//     has its own latency estimate per endpoint; a range read, which
//     holds a link for long, joins the shortest queue of range reads
//     over all endpoints rather than the better of two, and a point read
//     that waited behind a range read in flight gives no sample;
//   - endpoints held in reserve (Request.Reserve, the leader for reads)
//     take requests only while every other is measurably slower
//     (Config.ReserveRatio);
//   - a request can skip endpoints by address (Request.Skip: a re-issued
//     read skips the members already tried), exclude them by tag, or
//     avoid them by tag (Request.Avoid: picked only when no other is
//     eligible); tags come from the adapter (UpdateTags) or hold for a
//     while and then expire by themselves (Mark).
//
// Streams (watches, keep-alives, long polls) are not outstanding requests:
// they are spread by their own count and give no latency sample.
//
// The other policies (LeastOutstanding, RoundRobin, ShuffledPin, Pinned) go
// through the same ticket path, so comparisons measure only the selection.
//
// Pick and Done take no lock and allocate nothing. The package uses only
// the standard library, in Go that a Go 1.8 toolchain compiles, so it can be
// vendored into old trees.
//
// Use:
//
//	p, err := picker.New(picker.Config{})
//	if err != nil { ... }
//	p.SetEndpoints([]string{"10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"})
//	t, err := p.Pick(picker.Request{})
//	if err != nil { ... }
//	err = send(t.Addr())
//	p.Done(t, picker.Outcome{}) // or Outcome{Result: picker.Failed}
package picker
