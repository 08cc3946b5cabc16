package v3balancer

import (
	"sync/atomic"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// events holds the callback set by SetEvents, a func(picker.Event).
var events atomic.Value

// SetEvents sets the callback that hears of the events of every engine in
// the process (see picker.Event): ejections, probes, restores and endpoint
// changes from the picker, and EventLeaderChanged when the prober finds a
// new leader. Engines are shared by every Balancer with the same endpoints
// and TLS key, so the callback is process-wide; nil turns it off. It runs
// on the goroutine of the call or the probe that caused the event, so it
// must return quickly. A Kubernetes 1.7 tree wires it to glog in its main
// (see examples/apiserver-v1.7):
//
//	v3balancer.SetEvents(func(ev picker.Event) { glog.Infof("etcd3 balancer: %v", ev) })
//
// The collector of package metrics can take the events too, in a module
// whose client_golang is new enough (it builds with v0.8.0, Kubernetes
// 1.7's).
func SetEvents(fn func(picker.Event)) {
	events.Store(fn)
}

func dispatch(ev picker.Event) {
	if fn, _ := events.Load().(func(picker.Event)); fn != nil {
		fn(ev)
	}
}

// noteLeader reports addr as the new leader, unless it is none or the last
// one reported. Only the probe goroutine calls it.
func (e *engine) noteLeader(addr string) {
	if addr == "" || addr == e.saidLeader {
		return
	}
	e.saidLeader = addr
	e.p.Emit(picker.Event{Kind: picker.EventLeaderChanged, Addr: addr})
}
