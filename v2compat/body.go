package v2compat

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// How a response body ended.
const (
	endEOF   = iota // read to the end
	endErr          // a read failed
	endClose        // closed before the end
)

// body wraps a response body so that the request stays in flight at its
// member until the body is read to EOF or closed, whichever comes first;
// the ticket is handed back exactly once.
type body struct {
	done int32 // atomic: 1 once the ticket is handed back

	rc     io.ReadCloser
	t      *Transport
	c      *call
	ep     *endpoint
	cancel context.CancelFunc
	tk     picker.Ticket
	stream bool          // tk is a stream ticket
	res    picker.Result // the answer's verdict, for streams
	last   bool          // this is the answer given to the caller
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.end(endEOF)
	case err != nil:
		b.end(endErr)
	}
	return n, err
}

func (b *body) Close() error {
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
	var r picker.Result
	switch {
	case b.stream && b.res != picker.OK:
		r = b.res
	case how == endErr && !b.c.gaveUp():
		// Reset or cut off in the middle of the answer: the member (or
		// the path to it) failed, not the caller.
		r = picker.Failed
	case b.stream && how == endEOF:
		r = picker.OK // a long poll delivered its event
	default:
		// A unary request's sample was taken at its headers; this ticket
		// only held it in flight. A body closed early is the caller's
		// choice.
		r = picker.Canceled
	}
	b.t.p.Done(b.tk, picker.Outcome{Result: r})
	if how == endErr && r == picker.Failed {
		b.t.judge(b.ep, r)
	}
	b.cancel()
	if b.last {
		b.t.forget(b.c)
	}
}
