package etcdbalance

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// grpcPicker is the picker handed to grpc while at least one member is
// READY. It asks the engine for a member and delegates to that member's
// pickfirst child. Its fields are set when it is built and never change
// (the balancer builds a new one on every state change), so grpc may call
// Pick from any number of goroutines; the engine does its own
// synchronisation.
type grpcPicker struct {
	bal    *etcdBalancer
	engine *picker.Picker
	rt     *router                    // routing rules; nil: plain load-aware choice
	ready  map[string]balancer.Picker // READY children by member address
	addrs  []string                   // every member address, ready or not
}

func (p *grpcPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	if err := p.bal.answerClaim(info.Ctx); err != nil {
		return balancer.PickResult{}, err
	}
	class := classify(info.FullMethodName)
	kind := class.kind()
	if class == rpcOther && isStream(info.Ctx) {
		kind = picker.Stream
	}

	var mark *readMark
	if class == rpcRead {
		mark = readMarkOf(info.Ctx)
	}
	var t picker.Ticket
	var err error
	if pin, ok := pinnedMember(info.Ctx); ok {
		if _, ready := p.ready[pin]; !ready {
			if !slices.Contains(p.addrs, pin) {
				// checkPin let it through, so the member left the set since.
				return balancer.PickResult{}, status.Errorf(codes.Unavailable, "etcdbalance: member %q is not among the client's endpoints", pin)
			}
			// Known but not connected: wait for the next picker (bounded
			// by the call's deadline).
			return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
		}
		t, err = p.engine.PickAddr(pin, kind)
	} else {
		var wait bool
		t, wait, err = pickRouted(p.engine, p.rt, class, kind, info.FullMethodName, overrideOf(info.Ctx), mark)
		if wait {
			return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
		}
	}
	if err != nil {
		// Nothing eligible: a member changed state since this picker was
		// built, and a new picker is on its way.
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	}
	child, ok := p.ready[t.Addr()]
	if !ok {
		// The engine's tags are newer than this picker (a member just became
		// READY); the next picker has it.
		p.engine.Done(t, picker.Outcome{Result: picker.Canceled})
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	}
	res, err := child.Pick(info)
	if err != nil {
		p.engine.Done(t, picker.Outcome{Result: picker.Canceled})
		return res, err
	}
	if mark != nil {
		if hc := hedgeCallOf(info.Ctx); hc != nil {
			hc.picked(p.engine, t) // arm the hedge (hedge.go)
		}
	}
	r := recordPool.Get().(*callRecord)
	r.engine, r.ticket, r.next, r.timeout = p.engine, t, res.Done, 0
	if kind == picker.Unary {
		if d, ok := info.Ctx.Deadline(); ok {
			r.timeout = time.Until(d)
		}
	}
	res.Done = r.done
	return res, nil
}

// noReadyPicker wraps endpointsharding's picker while no member is READY.
// Calls wait for a member (clientv3 makes every call WaitForReady), except
// when a member failed its TLS handshake because its certificate does not
// verify: that will not change by waiting, and the wait would only hide
// the reason, since clientv3 reports a call that ran out of time as the
// bare context error. Such calls fail at once with Unavailable and the
// handshake error ("... x509: certificate signed by unknown authority"),
// which clientv3 returns after its usual retries of a Range.
type noReadyPicker struct {
	balancer.Picker
	bal *etcdBalancer
}

func (p noReadyPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	if err := p.bal.answerClaim(info.Ctx); err != nil {
		return balancer.PickResult{}, err
	}
	res, err := p.Picker.Pick(info)
	if err != nil && isCertificateError(err) {
		return res, status.Error(codes.Unavailable, err.Error())
	}
	return res, err
}

// isCertificateError reports whether err comes from a TLS handshake that
// failed for good: a certificate that does not verify, or a peer that does
// not speak TLS.
func isCertificateError(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		record   tls.RecordHeaderError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &record) || errors.As(err, &unknown) ||
		errors.As(err, &hostname) || errors.As(err, &invalid)
}

// callRecord carries one pick's ticket to its Done. Records are pooled and
// their done func is bound once, when the record is made, so that a pick
// allocates nothing in steady state. grpc calls Done exactly once for every
// pick it uses, after which the record goes back to the pool.
//
// A record belongs to one call from Pick to Done and is touched by nothing
// else, so it needs no lock; the pool hands it from one call to the next.
type callRecord struct {
	engine  *picker.Picker
	ticket  picker.Ticket
	timeout time.Duration           // the call's remaining deadline at pick time; 0 = none
	next    func(balancer.DoneInfo) // the child's Done, if any
	done    func(balancer.DoneInfo) // r.finish, bound once
}

// recordPool holds idle callRecords. Its New is set in init: set in the
// declaration it would make an initialisation cycle (finish refers to the
// pool).
var recordPool sync.Pool

func newCallRecord() any {
	r := new(callRecord)
	r.done = r.finish
	return r
}

func (r *callRecord) finish(info balancer.DoneInfo) {
	engine, t, timeout, next := r.engine, r.ticket, r.timeout, r.next
	r.engine, r.ticket, r.next = nil, picker.Ticket{}, nil
	recordPool.Put(r)
	engine.Done(t, outcome(info, timeout))
	if next != nil {
		next(info)
	}
}
