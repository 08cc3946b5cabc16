package v2compat

import (
	"context"
	"io"
	"sync/atomic"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// How a response body ended.
const (
	endEOF   = iota // read to the end
	endErr          // a read failed
	endClose        // closed before the end
)

// body wraps a response body so that the attempt stays in flight at its
// member until the body is read to EOF or closed, whichever comes first.
// It holds the attempt's only ticket and hands it back exactly once, with
// the verdict of the headers and, for an answer, the time to the headers as
// the latency sample: how long the member took to answer, not how long the
// caller took to read the answer.
type body struct {
	done    int32 // atomic: 1 once the ticket is handed back
	closing int32 // atomic: 1 once Close has been called

	rc     io.ReadCloser
	t      *Transport
	c      *call
	a      *attempt
	ep     *endpoint
	cancel context.CancelFunc
	tk     picker.Ticket
	res    picker.Result // the verdict of the headers: OK, or Failed for a 5xx
	lat    time.Duration // time to the headers
	last   bool          // this is the answer given to the caller
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.end(endEOF)
	case err != nil:
		if atomic.LoadInt32(&b.closing) == 1 {
			// A read racing with Close fails because of the Close (the
			// v2 client closes the body from another goroutine when its
			// context ends): the caller's choice, not the member's fault.
			b.end(endClose)
		} else {
			b.end(endErr)
		}
	}
	return n, err
}

func (b *body) Close() error {
	atomic.StoreInt32(&b.closing, 1)
	err := b.rc.Close()
	b.end(endClose)
	return err
}

// markLast makes b the body of the answer returned to the caller: when it
// ends, the call ends.
func (b *body) markLast() {
	b.last = true
	if atomic.LoadInt32(&b.done) == 1 {
		b.t.forget(b.c)
	}
}

func (b *body) end(how int) {
	if !atomic.CompareAndSwapInt32(&b.done, 0, 1) {
		return
	}
	stream := b.tk.Kind() == picker.Stream
	var o picker.Outcome
	switch {
	case b.res != picker.OK:
		// A 5xx answer, judged at its headers.
		o.Result = b.res
	case how == endErr && !b.c.gaveUp() && atomic.LoadInt32(&b.a.lost) == 0:
		// Reset or cut off in the middle of the answer: the member (or
		// the path to it) failed, not the caller, nor a hedged read's
		// other attempt that won.
		o.Result = picker.Failed
	case stream && how != endEOF:
		// A long poll the caller gave up on: no verdict.
		o.Result = picker.Canceled
	case stream:
		o.Result = picker.OK // a long poll delivered its event; no sample
	default:
		// A unary answer, whether read to the end or closed early (the
		// caller's choice): the member answered in lat.
		o = picker.Outcome{Result: picker.OK, Latency: b.lat}
	}
	b.t.p.Done(b.tk, o)
	if how == endErr && o.Result == picker.Failed && b.res == picker.OK {
		b.t.judge(b.ep, o.Result)
	}
	b.cancel()
	if b.last {
		b.t.forget(b.c)
	}
}
