package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

func TestEventLog(t *testing.T) {
	var out bytes.Buffer
	l := newEventLog(&out)
	l.start([]string{"127.0.0.1:1", "http://127.0.0.1:2"})
	c1, c2 := l.client(), l.client()
	c1(picker.Event{Kind: picker.EventEjected, Addr: "127.0.0.1:2", Reason: picker.ReasonFailures, Backoff: time.Second})
	l.mark("reset counters") // bookkeeping: not part of the story
	l.mark("black hole off")
	c2(picker.Event{Kind: picker.EventViewRound})
	c2(picker.Event{Kind: picker.EventRestored, Addr: "127.0.0.1:2"})
	for i := 0; i < maxEventLines; i++ {
		c2(picker.Event{Kind: picker.EventProbe, Addr: "10.0.0.1:2379"})
	}
	l.print("etcdbalance")
	lines := strings.Split(out.String(), "\n")
	if !strings.HasPrefix(lines[0], "events of etcdbalance (2 clients;") {
		t.Fatalf("header %q", lines[0])
	}
	for i, want := range []string{
		"client 1  ejected member 1 (127.0.0.1:2) reason=failures backoff=1s",
		"-- black hole off",
		"client 2  restored member 1 (127.0.0.1:2)",
		"client 2  probe 10.0.0.1:2379",
	} {
		if !strings.HasSuffix(lines[i+1], want) {
			t.Errorf("line %d: %q, want it to end with %q", i+1, lines[i+1], want)
		}
	}
	if want := "  ... 3 more"; !strings.Contains(out.String(), want) {
		t.Errorf("no %q at the end:\n%s", want, lines[len(lines)-3:])
	}
	var nilLog *eventLog
	nilLog.start(nil) // rows without -events: no-ops
	nilLog.mark("black hole on")
	nilLog.print("x")
}

// TestEventsFlagSmoke: -events prints an etcdbalance row's event log with
// the scenario's faults in it.
func TestEventsFlagSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster")
	}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, []string{
		"-scenario", "blackhole", "-members", "3", "-clients", "1", "-duration", "1500ms",
		"-warmup", "0s", "-concurrency", "2", "-keys", "10", "-policies", "etcdbalance", "-events",
	}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	for _, want := range []string{"events of etcdbalance (1 clients", "client 1  added member", "-- black hole on", "-- black hole off"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr has no %q:\n%s", want, &stderr)
		}
	}
}

// TestEventsWithReserveRatio: -events and -reserve-ratio both reach an
// etcdbalance row's engine configuration (one WithPickerConfig).
func TestEventsWithReserveRatio(t *testing.T) {
	var stderr bytes.Buffer
	o, err := parseFlags([]string{"-policies", "etcdbalance", "-events", "-reserve-ratio", "2"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	p := o.policies[0]
	if p.events == nil || p.pickerCfg.ReserveRatio != 2 {
		t.Fatalf("events %v, picker config %+v: want both flags", p.events != nil, p.pickerCfg)
	}
}
