package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPrintsOneShareLinePerMember(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"-reads", "600", "-keys", "20"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	line := regexp.MustCompile(`^member (\S+) share ([0-9.]+)( leader)?$`)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 member lines, got:\n%s", out.String())
	}
	var sum, leaderShare float64
	leaders := 0
	for _, l := range lines {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("malformed line %q", l)
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		sum += v
		if m[3] != "" {
			leaders++
			leaderShare = v
		}
	}
	if sum < 0.99 || sum > 1.01 || leaders != 1 {
		t.Fatalf("shares sum to %.3f with %d leaders:\n%s", sum, leaders, out.String())
	}
	// Reads go to the followers by default; the leader takes them as an
	// ordinary member only while every follower is measurably slower. These
	// reads are linearizable, and a follower's waits for a ReadIndex round
	// trip to the leader, so on loopback the followers often are: the
	// leader then takes about its fair share, never much more.
	if leaderShare > 0.45 {
		t.Errorf("the leader served %.1f%% of the reads, want about its fair third at most:\n%s", 100*leaderShare, out.String())
	}
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-reads", "0"}, "-reads 0"},
		{[]string{"-members", "12"}, "-members 12"},
		{[]string{"-endpoints", "a,,b"}, `"a,,b"`},
		{[]string{"-concurrency", "-1"}, "-concurrency -1"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestMetricsAndLog: with -metrics-addr the client's metrics are served
// while it holds, and the balancer's events are logged to stderr.
func TestMetricsAndLog(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"-reads", "200", "-keys", "10", "-metrics-addr", "127.0.0.1:0", "-hold", "1m"}, &out, &errOut)
	}()
	at := regexp.MustCompile(`metrics at (http://\S+/metrics)`)
	var url string
	deadline := time.Now().Add(60 * time.Second)
	for url == "" || !strings.Contains(out.String(), "share") {
		if m := at.FindStringSubmatch(errOut.String()); m != nil {
			url = m[1]
		}
		select {
		case c := <-code:
			t.Fatalf("exit %d before holding: %s", c, errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics address and shares after 60s; stderr:\n%s", errOut.String())
		}
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"etcdbalance_picks_total{", "etcdbalance_leader{", "etcdbalance_view_probe_rounds_total "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %s:\n%s", want, body)
		}
	}
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("exit %d: %s", c, errOut.String())
	}
	for _, want := range []string{"leader changed", "member added", "held: "} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr has no %q:\n%s", want, errOut.String())
		}
	}
}
