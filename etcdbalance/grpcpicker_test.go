package etcdbalance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// childPicker stands in for a READY pickfirst child: it returns a fixed
// result. (The server side is never faked; this is the balancer's own
// plumbing.)
type childPicker struct {
	addr  string
	done  func(balancer.DoneInfo)
	err   error
	calls int
}

func (c *childPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	c.calls++
	return balancer.PickResult{Done: c.done}, c.err
}

func testPicker(t testing.TB, addrs []string, ready ...string) (*grpcPicker, map[string]*childPicker) {
	t.Helper()
	return testPickerWith(t, picker.Config{}, addrs, ready...)
}

func testPickerWith(t testing.TB, cfg picker.Config, addrs []string, ready ...string) (*grpcPicker, map[string]*childPicker) {
	t.Helper()
	cfg.Rand = picker.NewSource(1)
	eng, err := picker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.SetEndpoints(addrs); err != nil {
		t.Fatal(err)
	}
	children := map[string]*childPicker{}
	p := &grpcPicker{engine: eng, ready: map[string]balancer.Picker{}, addrs: addrs}
	for _, a := range addrs {
		_ = eng.UpdateTags(a, tagDown, 0)
	}
	for _, a := range ready {
		c := &childPicker{addr: a}
		children[a] = c
		p.ready[a] = c
		_ = eng.UpdateTags(a, 0, tagDown)
	}
	return p, children
}

func stats(t testing.TB, eng *picker.Picker) map[string]picker.EndpointStats {
	t.Helper()
	m := map[string]picker.EndpointStats{}
	for _, s := range eng.Snapshot() {
		m[s.Addr] = s
	}
	return m
}

func TestPickOnlyReady(t *testing.T) {
	// Round robin, so that both ready members are used whatever their
	// (nanosecond) latencies.
	p, children := testPickerWith(t, picker.Config{Policy: picker.RoundRobin}, []string{"a:1", "b:1", "c:1"}, "a:1", "c:1")
	for range 300 {
		res, err := p.Pick(balancer.PickInfo{FullMethodName: "/etcdserverpb.KV/Range", Ctx: context.Background()})
		if err != nil {
			t.Fatal(err)
		}
		res.Done(balancer.DoneInfo{BytesSent: true, BytesReceived: true})
	}
	if children["a:1"].calls == 0 || children["c:1"].calls == 0 {
		t.Errorf("picks a=%d c=%d: want both used", children["a:1"].calls, children["c:1"].calls)
	}
	st := stats(t, p.engine)
	if st["b:1"].Picks != 0 {
		t.Errorf("member that is not ready was picked %d times", st["b:1"].Picks)
	}
	for a, s := range st {
		if s.InFlight != 0 {
			t.Errorf("%s: %d in flight after every Done", a, s.InFlight)
		}
	}
}

func TestPickStreamsAreCountedApart(t *testing.T) {
	p, _ := testPicker(t, []string{"a:1", "b:1", "c:1"}, "a:1", "b:1", "c:1")
	var dones []func(balancer.DoneInfo)
	for range 30 {
		res, err := p.Pick(balancer.PickInfo{FullMethodName: "/etcdserverpb.Watch/Watch", Ctx: context.Background()})
		if err != nil {
			t.Fatal(err)
		}
		dones = append(dones, res.Done)
	}
	// An unknown method marked as a stream by the interceptor is a stream too.
	ctx := context.WithValue(context.Background(), streamKey{}, true)
	res, err := p.Pick(balancer.PickInfo{FullMethodName: "/grpc.health.v1.Health/Watch", Ctx: ctx})
	if err != nil {
		t.Fatal(err)
	}
	dones = append(dones, res.Done)
	total := int64(0)
	for a, s := range stats(t, p.engine) {
		if s.InFlight != 0 {
			t.Errorf("%s: streams counted in flight (%d)", a, s.InFlight)
		}
		if s.Streams < 10 || s.Streams > 11 {
			t.Errorf("%s: %d streams of 31, want 10 or 11", a, s.Streams)
		}
		total += s.Streams
	}
	if total != 31 {
		t.Errorf("%d streams open, want 31", total)
	}
	for _, d := range dones {
		d(balancer.DoneInfo{Err: status.Error(codes.Canceled, "bye"), BytesSent: true, BytesReceived: true})
	}
	for a, s := range stats(t, p.engine) {
		if s.Streams != 0 || s.Failures != 0 {
			t.Errorf("%s after the streams ended: %+v", a, s)
		}
	}
}

func TestPickChainsChildDone(t *testing.T) {
	p, children := testPicker(t, []string{"a:1"}, "a:1")
	var got []balancer.DoneInfo
	children["a:1"].done = func(i balancer.DoneInfo) { got = append(got, i) }
	res, err := p.Pick(balancer.PickInfo{FullMethodName: "/etcdserverpb.KV/Put", Ctx: context.Background()})
	if err != nil {
		t.Fatal(err)
	}
	info := balancer.DoneInfo{Err: io.ErrUnexpectedEOF, BytesSent: true}
	res.Done(info)
	if len(got) != 1 || got[0].Err != io.ErrUnexpectedEOF {
		t.Errorf("child Done got %+v, want the call's DoneInfo once", got)
	}
}

func TestPickChildError(t *testing.T) {
	p, children := testPicker(t, []string{"a:1"}, "a:1")
	children["a:1"].err = balancer.ErrNoSubConnAvailable
	if _, err := p.Pick(balancer.PickInfo{FullMethodName: "/etcdserverpb.KV/Range", Ctx: context.Background()}); err != balancer.ErrNoSubConnAvailable {
		t.Fatalf("Pick: %v, want the child's error", err)
	}
	if s := stats(t, p.engine)["a:1"]; s.InFlight != 0 {
		t.Errorf("ticket not handed back when the child failed: %+v", s)
	}
}

func TestPickStalePicker(t *testing.T) {
	// The engine says b is up, but this picker was built before b was
	// READY: the pick must wait for the next picker, and hand the ticket
	// back.
	p, _ := testPicker(t, []string{"a:1", "b:1"}, "a:1")
	_ = p.engine.UpdateTags("a:1", tagDown, 0)
	_ = p.engine.UpdateTags("b:1", 0, tagDown)
	if _, err := p.Pick(balancer.PickInfo{FullMethodName: "/etcdserverpb.KV/Range", Ctx: context.Background()}); err != balancer.ErrNoSubConnAvailable {
		t.Fatalf("Pick: %v, want ErrNoSubConnAvailable", err)
	}
	if s := stats(t, p.engine)["b:1"]; s.InFlight != 0 || s.Failures != 0 {
		t.Errorf("stale pick left state behind: %+v", s)
	}
}

func TestPickPinned(t *testing.T) {
	p, children := testPicker(t, []string{"a:1", "b:1", "c:1"}, "a:1", "b:1")
	ctx := WithMember(context.Background(), "http://b:1")
	for range 20 {
		res, err := p.Pick(balancer.PickInfo{FullMethodName: "/etcdserverpb.Maintenance/Status", Ctx: ctx})
		if err != nil {
			t.Fatal(err)
		}
		res.Done(balancer.DoneInfo{BytesSent: true, BytesReceived: true})
	}
	if children["a:1"].calls != 0 || children["b:1"].calls != 20 {
		t.Errorf("pinned calls went a=%d b=%d, want 0 and 20", children["a:1"].calls, children["b:1"].calls)
	}
	// Known but not ready: wait.
	_, err := p.Pick(balancer.PickInfo{FullMethodName: "/etcdserverpb.KV/Range", Ctx: WithMember(context.Background(), "c:1")})
	if err != balancer.ErrNoSubConnAvailable {
		t.Errorf("pin to a member that is not ready: %v, want ErrNoSubConnAvailable", err)
	}
	// Unknown: Unavailable, naming the member.
	_, err = p.Pick(balancer.PickInfo{FullMethodName: "/etcdserverpb.KV/Range", Ctx: WithMember(context.Background(), "z:9")})
	if status.Code(err) != codes.Unavailable || !errorContains(err, `"z:9"`) {
		t.Errorf("pin to an unknown member: %v, want Unavailable naming it", err)
	}
}

func errorContains(err error, s string) bool {
	return err != nil && len(s) > 0 && contains(err.Error(), s)
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestOutcome(t *testing.T) {
	full := balancer.DoneInfo{BytesSent: true, BytesReceived: true}
	with := func(err error) balancer.DoneInfo { d := full; d.Err = err; return d }
	cases := []struct {
		name string
		info balancer.DoneInfo
		want picker.Outcome
	}{
		{"ok", full, picker.Outcome{}},
		{"never ran", balancer.DoneInfo{}, picker.Outcome{Result: picker.Canceled}},
		{"unavailable", with(status.Error(codes.Unavailable, "transport is closing")), picker.Outcome{Result: picker.Failed}},
		{"unavailable before sending", balancer.DoneInfo{Err: status.Error(codes.Unavailable, "connection refused")}, picker.Outcome{Result: picker.Failed}},
		{"deadline", with(status.Error(codes.DeadlineExceeded, "context deadline exceeded")), picker.Outcome{Result: picker.DeadlineExceeded, Timeout: time.Second}},
		{"context deadline", with(context.DeadlineExceeded), picker.Outcome{Result: picker.DeadlineExceeded, Timeout: time.Second}},
		{"canceled", with(status.Error(codes.Canceled, "context canceled")), picker.Outcome{Result: picker.Canceled}},
		{"context canceled", with(fmt.Errorf("wrapped: %w", context.Canceled)), picker.Outcome{Result: picker.Canceled}},
		{"not found", with(status.Error(codes.NotFound, "etcdserver: requested lease not found")), picker.Outcome{}},
		{"failed precondition", with(status.Error(codes.FailedPrecondition, "etcdserver: member not learner")), picker.Outcome{}},
		{"out of range", with(status.Error(codes.OutOfRange, "etcdserver: mvcc: required revision has been compacted")), picker.Outcome{}},
		{"invalid argument", with(status.Error(codes.InvalidArgument, "etcdserver: key is not provided")), picker.Outcome{}},
		{"plain error", with(errors.New("boom")), picker.Outcome{}},
	}
	for _, c := range cases {
		if got := outcome(c.info, time.Second); got != c.want {
			t.Errorf("%s: outcome = %+v, want %+v", c.name, got, c.want)
		}
	}
}

// TestPickAllocs: in steady state a pick and its Done allocate nothing.
func TestPickAllocs(t *testing.T) {
	p, _ := testPicker(t, []string{"a:1", "b:1", "c:1"}, "a:1", "b:1", "c:1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if n := pickAllocs(t, p, balancer.PickInfo{FullMethodName: "/etcdserverpb.KV/Range", Ctx: ctx}); n != 0 {
		t.Errorf("Pick+Done allocates %v times per call", n)
	}
}

// pickAllocs measures the allocations of a pick for info and its Done,
// once the record pool is filled.
func pickAllocs(t *testing.T, p *grpcPicker, info balancer.PickInfo) float64 {
	t.Helper()
	done := balancer.DoneInfo{BytesSent: true, BytesReceived: true}
	pick := func() {
		res, err := p.Pick(info)
		if err != nil {
			t.Fatal(err)
		}
		res.Done(done)
	}
	for range 100 {
		pick() // fill the pool
	}
	return testing.AllocsPerRun(1000, pick)
}

func BenchmarkPick(b *testing.B) {
	p, _ := testPicker(b, []string{"a:1", "b:1", "c:1", "d:1", "e:1"}, "a:1", "b:1", "c:1", "d:1", "e:1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	info := balancer.PickInfo{FullMethodName: "/etcdserverpb.KV/Range", Ctx: ctx}
	done := balancer.DoneInfo{BytesSent: true, BytesReceived: true}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := p.Pick(info)
			if err != nil {
				b.Fatal(err)
			}
			res.Done(done)
		}
	})
}

func TestNoReadyPicker(t *testing.T) {
	certErr := fmt.Errorf("connection error: desc = %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}})
	cases := []struct {
		name     string
		child    error
		wantCode codes.Code // codes.OK: the child's error passes unchanged
	}{
		{"waiting", balancer.ErrNoSubConnAvailable, codes.OK},
		{"refused", errors.New("connection error: desc = \"transport: Error while dialing: dial tcp: connect: connection refused\""), codes.OK},
		{"certificate", certErr, codes.Unavailable},
		{"not TLS", fmt.Errorf("handshake: %w", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), codes.Unavailable},
		{"hostname", fmt.Errorf("handshake: %w", x509.HostnameError{Host: "db.example"}), codes.Unavailable},
	}
	for _, c := range cases {
		p := noReadyPicker{Picker: &childPicker{err: c.child}}
		_, err := p.Pick(balancer.PickInfo{})
		if c.wantCode == codes.OK {
			if err != c.child {
				t.Errorf("%s: %v, want the child's error unchanged", c.name, err)
			}
			continue
		}
		if st, ok := status.FromError(err); !ok || st.Code() != c.wantCode || st.Message() != c.child.Error() {
			t.Errorf("%s: %v, want %v with the child's message", c.name, err, c.wantCode)
		}
	}
}
