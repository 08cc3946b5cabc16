package v3balancer

import (
	"reflect"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
	"golang.org/x/net/context"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// kind is what a call is, for routing.
type kind uint8

const (
	kindOther kind = iota
	kindRead
	kindSerializable
	kindWrite
	kindStream
)

// record travels in a call's context from the interceptor to Balancer.Get
// and back. grpc v1.0.4 calls the interceptor, Get and put on the caller's
// goroutine for a unary call, so the record needs no lock.
type record struct {
	kind kind
	pin  string // pick this address (status probes)

	bal     *Balancer
	t       picker.Ticket
	start   time.Time
	latency time.Duration // set by put
	pending bool          // t is issued and not yet handed back
}

type recordKey struct{}

func recordFrom(ctx context.Context) *record {
	r, _ := ctx.Value(recordKey{}).(*record)
	return r
}

// withAddr pins the call made with the returned context to addr.
func withAddr(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, recordKey{}, &record{pin: addr})
}

// UnaryInterceptor marks each unary call's kind for the Balancer, then runs
// next (clientv3 3.1.5 installs go-grpc-prometheus's interceptor there, in
// grpc v1.0.4's only slot; nil runs the call directly). After the call it
// hands the outcome to the engine: put alone cannot tell a failure from an
// answer.
func UnaryInterceptor(next grpc.UnaryClientInterceptor) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		r := recordFrom(ctx)
		if r == nil {
			r = &record{}
			ctx = context.WithValue(ctx, recordKey{}, r)
		}
		r.kind = classify(method, req)
		var err error
		if next != nil {
			err = next(ctx, method, req, reply, cc, invoker, opts...)
		} else {
			err = invoker(ctx, method, req, reply, cc, opts...)
		}
		r.finish(ctx, cc, err)
		return err
	}
}

// StreamInterceptor marks streams (Watch, LeaseKeepAlive), which the
// Balancer spreads by count and never measures, then runs next (or the
// streamer when next is nil).
func StreamInterceptor(next grpc.StreamClientInterceptor) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		r := &record{kind: kindStream}
		ctx = context.WithValue(ctx, recordKey{}, r)
		var s grpc.ClientStream
		var err error
		if next != nil {
			s, err = next(ctx, desc, cc, method, streamer, opts...)
		} else {
			s, err = streamer(ctx, desc, cc, method, opts...)
		}
		if r.bal != nil {
			r.bal.setConn(cc)
		}
		return s, err
	}
}

// classify tells writes from reads by method, and serializable reads by the
// request's Serializable field. The field is read by reflection so that the
// package need not import etcd's generated types (which would tie it to one
// vendored etcd).
func classify(method string, req interface{}) kind {
	switch method {
	case "/etcdserverpb.KV/Range":
		v := reflect.ValueOf(req)
		if v.Kind() == reflect.Ptr && !v.IsNil() {
			v = v.Elem()
		}
		if v.Kind() == reflect.Struct {
			if f := v.FieldByName("Serializable"); f.IsValid() && f.Kind() == reflect.Bool && f.Bool() {
				return kindSerializable
			}
		}
		return kindRead
	case "/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange", "/etcdserverpb.KV/Txn",
		"/etcdserverpb.KV/Compact", "/etcdserverpb.Lease/LeaseGrant", "/etcdserverpb.Lease/LeaseRevoke":
		return kindWrite
	}
	return kindOther
}

// put is handed to grpc for a marked unary call: it ends the latency
// sample; finish hands the ticket back once the outcome is known.
func (r *record) put() {
	if d := time.Since(r.start); d > 0 {
		r.latency = d
	}
}

// issue records the ticket of a new attempt. grpc v1.0.4 asks Get again
// within one call only after the previous attempt's transport failed, so an
// attempt still pending failed.
func (r *record) issue(b *Balancer, t picker.Ticket) {
	if r.pending {
		r.bal.eng.p.Done(r.t, picker.Outcome{Result: picker.Failed})
	}
	r.bal, r.t, r.start, r.latency, r.pending = b, t, time.Now(), 0, true
}

func (r *record) finish(ctx context.Context, cc *grpc.ClientConn, err error) {
	if r.bal == nil {
		return
	}
	r.bal.setConn(cc)
	if !r.pending {
		return
	}
	r.pending = false
	o := picker.Outcome{Result: result(ctx, err), Latency: r.latency}
	if o.Result == picker.DeadlineExceeded {
		if d, ok := ctx.Deadline(); ok {
			o.Timeout = d.Sub(r.start)
		}
	}
	r.bal.eng.p.Done(r.t, o)
}

// result blames the member for unavailability, internal errors, "too many
// requests" and deadlines; application errors are answers.
func result(ctx context.Context, err error) picker.Result {
	if err == nil {
		return picker.OK
	}
	if ctx.Err() == context.Canceled {
		return picker.Canceled
	}
	switch grpc.Code(err) {
	case codes.Canceled:
		return picker.Canceled
	case codes.DeadlineExceeded:
		return picker.DeadlineExceeded
	case codes.Unavailable, codes.Internal, codes.ResourceExhausted:
		return picker.Failed
	}
	return picker.OK
}
