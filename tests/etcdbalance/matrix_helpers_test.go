package etcdbalance_test

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
)

// Full gRPC method names, as the members' servers see them.
const (
	rpcPut          = "/etcdserverpb.KV/Put"
	rpcRange        = "/etcdserverpb.KV/Range"
	rpcRangeStream  = "/etcdserverpb.KV/RangeStream" // etcd 3.7 and later
	rpcStatus       = "/etcdserverpb.Maintenance/Status"
	rpcSnapshot     = "/etcdserverpb.Maintenance/Snapshot"
	rpcAuthenticate = "/etcdserverpb.Auth/Authenticate"
)

// serverHooks sits in every member's gRPC server, after etcd's own
// interceptors (so calls that etcd refuses itself, such as a learner's
// refusals, are not seen): it counts the calls each member receives, by
// method, and can make one member fail or hold one method. It is
// installed through etcdcluster.Config.Tweak, which sees each member's
// name, and survives restarts.
type serverHooks struct {
	mu     sync.Mutex
	calls  map[string]map[string]int64                       // member name → method → calls
	faults map[string]map[string]func(context.Context) error // member name → method → fault
}

func newServerHooks() *serverHooks {
	return &serverHooks{calls: map[string]map[string]int64{}, faults: map[string]map[string]func(context.Context) error{}}
}

// config returns cfg with the hooks installed in every member.
func (h *serverHooks) config(cfg etcdcluster.Config) etcdcluster.Config {
	prev := cfg.Tweak
	cfg.Tweak = func(ec *embed.Config) {
		if prev != nil {
			prev(ec)
		}
		name := ec.Name
		ec.GRPCAdditionalServerOptions = append(ec.GRPCAdditionalServerOptions,
			grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
				if err := h.arrive(ctx, name, info.FullMethod); err != nil {
					return nil, err
				}
				return handler(ctx, req)
			}),
			grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
				if err := h.arrive(ss.Context(), name, info.FullMethod); err != nil {
					return err
				}
				return handler(srv, ss)
			}))
	}
	return cfg
}

func (h *serverHooks) arrive(ctx context.Context, member, method string) error {
	h.mu.Lock()
	m := h.calls[member]
	if m == nil {
		m = map[string]int64{}
		h.calls[member] = m
	}
	m[method]++
	f := h.faults[member][method]
	h.mu.Unlock()
	if f != nil {
		return f(ctx)
	}
	return nil
}

// setFault makes member run f on every call of method before serving it;
// a non-nil error fails the call. nil removes the fault.
func (h *serverHooks) setFault(member, method string, f func(context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.faults[member] == nil {
		h.faults[member] = map[string]func(context.Context) error{}
	}
	if f == nil {
		delete(h.faults[member], method)
	} else {
		h.faults[member][method] = f
	}
}

// count returns how many calls of method each of ms has received.
func (h *serverHooks) count(ms []*etcdcluster.Member, method string) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = h.calls[m.Name()][method]
	}
	return out
}

func total(d []int64) (n int64) {
	for _, v := range d {
		n += v
	}
	return n
}

// newClientCfg returns a stock clientv3 client for cfg (round_robin),
// closed when the test ends.
func newClientCfg(t testing.TB, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("clientv3.New: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// newDialOptionsClient returns clientv3.New(cfg) with DialOptions(opts...)
// appended, closed when the test ends.
func newDialOptionsClient(t testing.TB, cfg clientv3.Config, opts ...etcdbalance.Option) *clientv3.Client {
	t.Helper()
	cfg.DialOptions = append(slices.Clip(cfg.DialOptions), etcdbalance.DialOptions(opts...)...)
	return newClientCfg(t, cfg)
}

// waitViewComplete waits until cli's view knows a leader and has verified
// exactly the members at addrs, and returns it.
func waitViewComplete(t testing.TB, cli *clientv3.Client, addrs []string) etcdbalance.View {
	t.Helper()
	return waitViewVerified(t, cli, addrs, true)
}

// waitViewVerified waits until the view lists exactly addrs, all verified,
// and, if needLeader, has found the leader (which it can only when the
// leader is one of addrs).
func waitViewVerified(t testing.TB, cli *clientv3.Client, addrs []string, needLeader bool) etcdbalance.View {
	t.Helper()
	want := slices.Clone(addrs)
	slices.Sort(want)
	var v etcdbalance.View
	deadline := time.Now().Add(30 * time.Second)
	for {
		v = viewOf(t, cli)
		var got []string
		verified := true
		for _, m := range v.Members {
			got = append(got, m.Addr)
			verified = verified && m.Verified
		}
		if (v.Leader != "" || !needLeader) && verified && slices.Equal(got, want) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("the view did not verify every member and find a leader: want members %v, have leader %q, members %+v", want, v.Leader, v.Members)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// statsAddrs returns the members Stats lists for cli, and which are ready.
func statsAddrs(t testing.TB, cli *clientv3.Client) (all, ready []string) {
	t.Helper()
	st, err := etcdbalance.Stats(cli)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	for _, s := range st {
		all = append(all, s.Addr)
		if s.Ready {
			ready = append(ready, s.Addr)
		}
	}
	return all, ready
}

// waitStatsReady waits until Stats lists exactly addrs, all ready.
func waitStatsReady(t testing.TB, cli *clientv3.Client, addrs []string) {
	t.Helper()
	want := slices.Clone(addrs)
	slices.Sort(want)
	var all, ready []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		all, ready = statsAddrs(t, cli)
		if slices.Equal(all, want) && slices.Equal(ready, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats lists %v (ready %v), want %v, all ready", all, ready, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exercise runs a Put, a linearizable and a serializable Get and a Watch
// on cli, each within 10 s, and fails the test on any error.
func exercise(t testing.TB, name string, cli *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := "exercise/" + name
	put, err := cli.Put(ctx, key, "v1")
	if err != nil {
		t.Fatalf("%s: Put: %v", name, err)
	}
	for _, opts := range [][]clientv3.OpOption{nil, {clientv3.WithSerializable()}} {
		if _, err := cli.Get(ctx, key, opts...); err != nil {
			t.Fatalf("%s: Get (serializable %v): %v", name, len(opts) > 0, err)
		}
	}
	if _, err := cli.Put(ctx, key, "v2"); err != nil {
		t.Fatalf("%s: second Put: %v", name, err)
	}
	// clientv3 logs in again for every watch stream, and a simple token is
	// known to a member only once it has applied that login: a stream that
	// reaches a member a moment behind fails with "invalid auth token". That
	// is etcd's, and stock clientv3 meets it as often (seen in this test):
	// a watch so ended is opened again, once.
	for try := 0; ; try++ {
		err := watchOnce(ctx, cli, key, put.Header.Revision)
		if err == nil {
			return
		}
		if try == 0 && strings.Contains(err.Error(), "invalid auth token") {
			t.Logf("%s: Watch: %v; again", name, err)
			continue
		}
		t.Fatalf("%s: Watch: %v", name, err)
	}
}

// watchOnce watches key from rev and waits for its first event.
func watchOnce(ctx context.Context, cli *clientv3.Client, key string, rev int64) error {
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	select {
	case resp, ok := <-cli.Watch(wctx, key, clientv3.WithRev(rev)):
		switch {
		case !ok:
			return fmt.Errorf("closed without an event")
		case resp.Err() != nil:
			return resp.Err()
		case len(resp.Events) == 0:
			return fmt.Errorf("answered without events: %+v", resp)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("no event within 10 s")
	}
}

// getStream calls KV.GetStream (client/v3 3.7 and later) by reflection,
// so that this file compiles on 3.6, and returns the revision of the
// answer. ok is false when the client has no GetStream.
func getStream(ctx context.Context, cli *clientv3.Client, key string, opts ...clientv3.OpOption) (rev int64, ok bool, err error) {
	m := reflect.ValueOf(cli.KV).MethodByName("GetStream")
	if !m.IsValid() {
		return 0, false, nil
	}
	args := []reflect.Value{reflect.ValueOf(ctx), reflect.ValueOf(key)}
	for _, o := range opts {
		args = append(args, reflect.ValueOf(o))
	}
	out := m.Call(args)
	if e, _ := out[1].Interface().(error); e != nil {
		return 0, true, e
	}
	ch := out[0]
	for {
		v, open := ch.Recv()
		if !open {
			return rev, true, nil
		}
		p := reflect.New(v.Type())
		p.Elem().Set(v)
		if e, _ := p.MethodByName("Err").Call(nil)[0].Interface().(error); e != nil {
			// Drain what is left (nothing, after a terminal error).
			for range ch.Len() {
				ch.Recv()
			}
			return 0, true, e
		}
		if rr := p.Elem().FieldByName("RangeResponse"); rr.IsValid() && !rr.IsNil() {
			if h := rr.MethodByName("GetHeader").Call(nil)[0]; !h.IsNil() {
				if r := h.Elem().FieldByName("Revision").Int(); r > 0 {
					rev = r
				}
			}
		}
	}
}

// guardField reads a GuardStats counter by name, so that a test can use a
// counter that an older version of this package lacks (ok false then).
func guardField(g etcdbalance.GuardStats, name string) (int64, bool) {
	f := reflect.ValueOf(g).FieldByName(name)
	if !f.IsValid() || f.Kind() != reflect.Int64 {
		return 0, false
	}
	return f.Int(), true
}

// isLearnerRefusal reports etcd's answer to a learner asked for something
// it does not serve.
func isLearnerRefusal(err error) bool {
	return err != nil && strings.Contains(err.Error(), "rpc not supported for learner")
}

// readAll drains and closes a snapshot stream, returning its size.
func readAll(rc io.ReadCloser) (int64, error) {
	defer func() { _ = rc.Close() }()
	return io.Copy(io.Discard, rc)
}
