package v3balancer

import (
	"testing"

	"github.com/etcdbalance/etcdbalance-go/metrics"
	"github.com/etcdbalance/etcdbalance-go/picker"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// TestEventsAndMetrics: the engine's events reach the callback, and the
// collector of package metrics, built here with client_golang v0.8.0,
// exports the ejection.
func TestEventsAndMetrics(t *testing.T) {
	col := metrics.New()
	var got []picker.Event
	SetEvents(func(ev picker.Event) {
		got = append(got, ev)
		col.Observe(ev)
	})
	defer SetEvents(nil)
	b := New(eps[:2], "events", nil)
	defer b.Close()
	upAll(b)
	unavailable := grpc.Errorf(codes.Unavailable, "member gone")
	var victim string
	for i := 0; i < 3*ejectAfter && victim == ""; i++ {
		a := call(t, b, "/etcdserverpb.KV/Range", nil, unavailable)
		for _, ev := range got {
			if ev.Kind == picker.EventEjected {
				victim = ev.Addr
				if a != victim || ev.Reason != picker.ReasonFailures {
					t.Fatalf("ejection %v after a call to %s", ev, a)
				}
			}
		}
	}
	if victim == "" {
		t.Fatalf("no ejection among %v", got)
	}
	b.eng.noteLeader("10.0.0.1:2379")
	b.eng.noteLeader("10.0.0.1:2379")

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(col); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			values[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	if v := values["etcdbalance_ejections_total member="+victim+" reason=failures"]; v != 1 {
		t.Errorf("ejections of %s: %v, want 1 (all: %v)", victim, v, values)
	}
	if v := values["etcdbalance_leader member=10.0.0.1:2379"]; v != 1 {
		t.Errorf("leader gauge of 10.0.0.1:2379: %v, want 1", v)
	}
	leaders := 0
	for _, ev := range got {
		if ev.Kind == picker.EventLeaderChanged {
			leaders++
		}
	}
	if leaders != 1 {
		t.Errorf("%d leader-changed events for one leader, want 1", leaders)
	}
}

// ejectAfter is picker.Config.EjectAfter's default.
const ejectAfter = 5
