package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

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
