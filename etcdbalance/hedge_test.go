package etcdbalance

import (
	"context"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// TestHedgeOptionValidation: a bad budget is an error naming it, from New
// and from dialling with DialOptions, as for the other options.
func TestHedgeOptionValidation(t *testing.T) {
	cfg := clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, Logger: zap.NewNop(), DialTimeout: time.Second}
	for _, c := range []struct {
		budget float64
		want   string
	}{{2, "budget 2 must be in [0, 1]"}, {-0.1, "budget -0.1 must"}, {math.NaN(), "budget NaN must"}, {math.Inf(1), "budget +Inf must"}} {
		before := reg.size()
		cli, err := New(cfg, WithHedgedReads(c.budget))
		if err == nil {
			cli.Close()
		}
		require.Error(t, err, "budget %v", c.budget)
		assert.True(t, strings.HasPrefix(err.Error(), "etcdbalance: ") && strings.Contains(err.Error(), c.want), "New: %v", err)

		dcfg := cfg
		dcfg.DialOptions = DialOptions(WithHedgedReads(c.budget))
		cli, err = clientv3.New(dcfg)
		if err == nil {
			cli.Close()
		}
		require.Error(t, err, "DialOptions, budget %v", c.budget)
		assert.Contains(t, err.Error(), c.want, "clientv3.New with DialOptions")
		assert.LessOrEqual(t, reg.size(), before, "registry grew on a rejected option")
	}
	for _, ok := range []float64{0, 0.05, 1} {
		assert.NoError(t, checkHedge(ok), "budget %v", ok)
	}
}

// hedgeEngine is an engine over members a and b with enough answers of
// 1 ms from a for a p95, and a ticket for a.
func hedgeEngine(t *testing.T) (*picker.Picker, picker.Ticket) {
	t.Helper()
	eng, err := picker.New(picker.Config{})
	require.NoError(t, err)
	require.NoError(t, eng.SetEndpoints([]string{"a", "b"}))
	for i := 0; i < 40; i++ {
		tk, err := eng.PickAddr("a", picker.Unary)
		require.NoError(t, err)
		eng.Done(tk, picker.Outcome{Latency: time.Millisecond})
	}
	tk, err := eng.PickAddr("a", picker.Unary)
	require.NoError(t, err)
	return eng, tk
}

// fill puts n whole tokens into h's budget.
func fill(h *hedger, n int) {
	for i := 0; i < n; i++ {
		h.budget.Refund()
	}
}

// drain spends every whole token of h's budget and returns how many.
func drain(h *hedger) int {
	n := 0
	for h.budget.Spend() {
		n++
	}
	return n
}

// TestHedgedInvoke drives invokeHedged with a fake invoker: the first
// attempt is "picked" to member a and gets no answer; the copy must go
// elsewhere, win, and cancel the first attempt.
func TestHedgedInvoke(t *testing.T) {
	eng, tk := hedgeEngine(t)
	defer eng.Done(tk, picker.Outcome{Result: picker.Canceled})
	h := newHedger(0.05)
	fill(h, 5)
	var firstErr error
	var copies atomic.Int32
	invoker := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		if hc := hedgeCallOf(ctx); hc != nil { // the first attempt
			hc.picked(eng, tk)
			<-ctx.Done()
			firstErr = ctx.Err()
			return status.FromContextError(ctx.Err()).Err()
		}
		copies.Add(1)
		assert.Equal(t, []string{"a"}, readMarkOf(ctx).skip, "the copy must avoid the first attempt's member")
		reply.(*pb.RangeResponse).Header = &pb.ResponseHeader{Revision: 7}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = context.WithValue(ctx, readKey{}, &readMark{serial: true})
	var resp pb.RangeResponse
	err := h.invokeHedged(ctx, "/etcdserverpb.KV/Range", &pb.RangeRequest{Key: []byte("k"), Serializable: true}, &resp, nil, invoker, nil)
	require.NoError(t, err)
	assert.Equal(t, int64(7), resp.GetHeader().GetRevision(), "the copy's answer")
	assert.ErrorIs(t, firstErr, context.Canceled, "the first attempt is canceled")
	assert.Equal(t, int32(1), copies.Load())
	assert.Equal(t, 4, drain(h), "one token of five spent")
}

// TestHedgedInvokeNoCopy: a first attempt that answers, an empty bucket,
// or a member without a p95 sends no copy.
func TestHedgedInvokeNoCopy(t *testing.T) {
	eng, tk := hedgeEngine(t)
	defer eng.Done(tk, picker.Outcome{Result: picker.Canceled})
	fresh, err := eng.PickAddr("b", picker.Unary) // b has no answers: no p95
	require.NoError(t, err)
	defer eng.Done(fresh, picker.Outcome{Result: picker.Canceled})

	for _, c := range []struct {
		name   string
		tokens int
		ticket picker.Ticket
		wait   time.Duration // how long the first attempt takes
	}{
		{"first answers", 5, tk, 0},
		{"no token", 0, tk, 50 * time.Millisecond},
		{"no p95", 5, fresh, 50 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHedger(0.05) // the read itself earns a twentieth of a token
			fill(h, c.tokens)
			var copies atomic.Int32
			invoker := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
				if hc := hedgeCallOf(ctx); hc != nil {
					hc.picked(eng, c.ticket)
					time.Sleep(c.wait) // the first attempt's service time, not a wait for a condition
					reply.(*pb.RangeResponse).Header = &pb.ResponseHeader{Revision: 3}
					return nil
				}
				copies.Add(1)
				return nil
			}
			var resp pb.RangeResponse
			err := h.invokeHedged(context.Background(), "/etcdserverpb.KV/Range", &pb.RangeRequest{Serializable: true}, &resp, nil, invoker, nil)
			require.NoError(t, err)
			assert.Equal(t, int64(3), resp.GetHeader().GetRevision())
			if c.name != "first answers" {
				assert.Zero(t, copies.Load(), "a copy was sent")
			}
		})
	}
}
