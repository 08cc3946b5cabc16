package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRunSmoke runs the harness end to end on a tiny cluster for a few
// seconds and checks the JSON it writes. It asserts the shape and the
// bookkeeping, never a speed.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "out.json")
	plots := filepath.Join(dir, "plots")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, []string{
		"-scenario", "incident",
		"-members", "3",
		"-clients", "2",
		"-duration", "2s",
		"-warmup", "200ms",
		"-concurrency", "2",
		"-keys", "40",
		"-policies", "v3-pinned,v3-roundrobin,etcdbalance",
		"-json", jsonPath,
		"-plots", plots,
	}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}

	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	// The documented shape, read back with its own field names.
	var got struct {
		Scenario  string  `json:"scenario"`
		Members   int     `json:"members"`
		Clients   int     `json:"clients"`
		DurationS float64 `json:"duration_s"`
		Machine   struct {
			CPUs int    `json:"cpus"`
			Go   string `json:"go"`
		} `json:"machine"`
		Results []struct {
			Policy        string  `json:"policy"`
			Requests      int64   `json:"requests"`
			Errors        int64   `json:"errors"`
			ThroughputRPS float64 `json:"throughput_rps"`
			LatencyMS     struct {
				P50, P90, P99, P999 float64
			} `json:"latency_ms"`
			MemberShare []float64 `json:"member_share"`
			MaxOverMean float64   `json:"max_over_mean_share"`
		} `json:"results"`
		V2Results []json.RawMessage `json:"v2_results"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("JSON does not parse: %v\n%s", err, data)
	}
	if got.Scenario != "incident" || got.Members != 3 || got.Clients != 2 || got.DurationS != 2 {
		t.Errorf("header = %q %d members %d clients %v s", got.Scenario, got.Members, got.Clients, got.DurationS)
	}
	if got.Machine.CPUs < 1 || !strings.HasPrefix(got.Machine.Go, "go") {
		t.Errorf("machine = %+v", got.Machine)
	}
	if got.V2Results == nil {
		t.Error("v2_results missing (want [] when no v2 policy ran)")
	}
	var names []string
	for _, r := range got.Results {
		names = append(names, r.Policy)
		if r.Requests == 0 {
			t.Errorf("%s: no requests", r.Policy)
		}
		if r.Errors > r.Requests {
			t.Errorf("%s: %d errors > %d requests", r.Policy, r.Errors, r.Requests)
		}
		if len(r.MemberShare) != 3 {
			t.Errorf("%s: member_share %v, want 3 members", r.Policy, r.MemberShare)
			continue
		}
		sum := 0.0
		for _, s := range r.MemberShare {
			sum += s
		}
		if sum < 0.99 || sum > 1.01 {
			t.Errorf("%s: shares %v sum to %v", r.Policy, r.MemberShare, sum)
		}
		if r.MaxOverMean < 1 || r.MaxOverMean > 3 {
			t.Errorf("%s: max_over_mean_share %v out of [1, 3]", r.Policy, r.MaxOverMean)
		}
		l := r.LatencyMS
		if !(l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999) {
			t.Errorf("%s: percentiles not ordered: %+v", r.Policy, l)
		}
	}
	if strings.Join(names, ",") != "v3-pinned,v3-roundrobin,etcdbalance" {
		t.Errorf("policies = %v", names)
	}
	if !strings.Contains(stdout.String(), "max/mean") {
		t.Errorf("no table on stdout:\n%s", &stdout)
	}
	for _, f := range []string{"incident-v3-share.svg", "incident-v3-latency.svg"} {
		b, err := os.ReadFile(filepath.Join(plots, f))
		if err != nil {
			t.Error(err)
			continue
		}
		if !bytes.Contains(b, []byte("<svg")) {
			t.Errorf("%s is not SVG", f)
		}
	}
}

// TestRunScenariosSmoke covers the fault hooks and the rounds of the
// overhead scenario with the smallest cluster that has a follower.
func TestRunScenariosSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster")
	}
	for _, sc := range []string{"blackhole", "overhead", "slow-member", "job-storm", "gc-pauses"} {
		t.Run(sc, func(t *testing.T) {
			pols, want := "v3-roundrobin,etcdbalance", 2
			switch sc {
			case "job-storm":
				pols, want = "v3-roundrobin,etcdbalance,etcdbalance-noleader", 3
			case "gc-pauses":
				pols, want = "etcdbalance,etcdbalance-hedged", 2
			}
			jsonPath := filepath.Join(t.TempDir(), "out.json")
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			code := run(ctx, []string{
				"-scenario", sc, "-members", "2", "-clients", "1", "-duration", "1s",
				"-warmup", "0s", "-concurrency", "2", "-keys", "10",
				"-policies", pols, "-json", jsonPath,
			}, &stdout, &stderr)
			if code != exitOK {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
			}
			var rep report
			data, err := os.ReadFile(jsonPath)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(data, &rep); err != nil {
				t.Fatal(err)
			}
			if len(rep.Results) != want {
				t.Fatalf("%d results, want %d", len(rep.Results), want)
			}
			if sc == "blackhole" && (rep.V3 == nil || rep.V3.FaultMember < 0) {
				t.Errorf("no faulted member recorded: %+v", rep.V3)
			}
			if sc == "slow-member" {
				c := rep.SlowMember
				if c == nil || c.Healthy == nil || c.HealthyP99MS <= 0 || c.OverHealthyP99 <= 0 || c.OverRoundRobinP99 <= 0 {
					t.Errorf("slow_member = %+v", c)
				}
			}
			if sc == "gc-pauses" {
				c := rep.GCPauses
				if c == nil || c.Healthy == nil || c.HealthyP999MS <= 0 || c.OverHealthyP999 <= 0 || c.CallsPerRequest <= 0 ||
					c.HealthyCallsPerRequest <= 0 || c.PlainCallsPerRequest <= 0 {
					t.Errorf("gc_pauses = %+v", c)
				}
			}
			if sc == "job-storm" {
				c := rep.JobStorm
				if c == nil || len(c.Rows) != 3 || c.Rows[0].ThroughputRatio != 1 {
					t.Fatalf("job_storm = %+v", c)
				}
				for _, r := range rep.Results {
					if r.Writes == nil || r.Writes.Requests == 0 || r.Writes.LatencyMS.P99 <= 0 {
						t.Errorf("%s: writes = %+v", r.Policy, r.Writes)
					}
					if r.OpLatencyMS["create"].P99 <= 0 || r.OpLatencyMS["update"].P99 <= 0 || r.OpLatencyMS["get"].P99 <= 0 {
						t.Errorf("%s: op latencies %+v", r.Policy, r.OpLatencyMS)
					}
				}
				if !strings.Contains(stdout.String(), "etcdbalance-noleader") {
					t.Errorf("no noleader row:\n%s", &stdout)
				}
			}
			if sc == "overhead" {
				if rep.Ratio == nil || len(rep.Ratio.Rounds) == 0 || rep.Ratio.Median <= 0 {
					t.Errorf("throughput_ratio = %+v", rep.Ratio)
				}
			}
		})
	}
}

// TestBadFlags checks that every bad value is named in the error and
// exits with 2, before anything starts.
// TestRunVintageSmoke runs the Kubernetes 1.7 client rows, whose clients
// are processes of the legacy module's vintage command.
func TestRunVintageSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the vintage drivers and starts an etcd cluster")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := run(ctx, []string{
		"-members", "3", "-clients", "2", "-duration", "2s", "-warmup", "200ms",
		"-concurrency", "2", "-keys", "40", "-policies", "v3-1.7-stock,v3-1.7-patched",
	}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	for _, row := range []string{"v3-1.7-stock ", "v3-1.7-patched "} {
		if !strings.Contains(stdout.String(), row) {
			t.Errorf("no %q row in the output:\n%s\nstderr:\n%s", row, &stdout, &stderr)
		}
	}
	if strings.Contains(stdout.String(), "left out") {
		t.Errorf("a vintage row was left out:\n%s", &stdout)
	}
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-scenario", "nope"}, `"nope"`},
		{[]string{"-policies", "v3-pinned,fastest"}, `"fastest"`},
		{[]string{"-policies", "etcdbalance,etcdbalance"}, `"etcdbalance"`},
		{[]string{"-policies", ","}, `","`},
		{[]string{"-members", "0"}, "-members 0"},
		{[]string{"-members", "12"}, "-members 12"},
		{[]string{"-clients", "-1"}, "-clients -1"},
		{[]string{"-duration", "10ms"}, "-duration 10ms"},
		{[]string{"-duration", "soon"}, `"soon"`},
		{[]string{"-concurrency", "0"}, "-concurrency 0"},
		{[]string{"-keys", "0"}, "-keys 0"},
		{[]string{"-warmup", "-1s"}, "-warmup -1s"},
		{[]string{"-endpoints", "localhost"}, `"localhost"`},
		{[]string{"-endpoints", "https://a:1"}, `"https"`},
		{[]string{"-endpoints", "a:1,b:2", "-members", "3"}, "-members 3"},
		{[]string{"-v2-endpoints", "a:1,a:1"}, `"a:1"`},
		{[]string{"extra"}, `"extra"`},
		{[]string{"-rate", "-5"}, "-rate -5"},
		{[]string{"-scenario", "job-storm", "-policies", "v2-stock"}, `"v2-stock"`},
		{[]string{"-reserve-ratio", "0.5"}, "-reserve-ratio 0.5"},
		{[]string{"-json", "/nonexistent-dir/x.json"}, `"/nonexistent-dir/x.json"`},
		{[]string{"-json", os.TempDir()}, strconv.Quote(os.TempDir())},
		{[]string{"-plots", "bench_test.go"}, `"bench_test.go"`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d", tc.args, code, exitUsage)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr does not name %s:\n%s", tc.args, tc.want, &stderr)
		}
	}
}

func TestPercentileNearestRank(t *testing.T) {
	var xs []time.Duration
	for i := 1; i <= 1000; i++ {
		xs = append(xs, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 500 * time.Millisecond}, {99, 990 * time.Millisecond}, {99.9, 999 * time.Millisecond}, {100, time.Second}, {0, time.Millisecond}} {
		if got := percentile(xs, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("empty: %v", got)
	}
	if got := percentile([]time.Duration{7}, 99.9); got != 7 {
		t.Errorf("one sample: %v", got)
	}
}

func TestShares(t *testing.T) {
	s, r := shares([]int64{100, 100, 100, 100, 100})
	if r != 1 || s[0] != 0.2 {
		t.Errorf("even: %v %v", s, r)
	}
	s, r = shares([]int64{0, 0, 500, 0, 0})
	if r != 5 || s[2] != 1 {
		t.Errorf("pinned: %v %v", s, r)
	}
	if _, r := shares([]int64{0, 0}); r != 0 {
		t.Errorf("nothing served: %v", r)
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
}

func TestMixAndWeights(t *testing.T) {
	w := busyWeights(0.8)(3)
	if w[0] != 0.8 || math.Abs(w[1]-0.1) > 1e-9 || w[1] != w[2] {
		t.Errorf("busyWeights(0.8)(3) = %v", w)
	}
	if w := busyWeights(0.8)(1); w[0] != 1 {
		t.Errorf("one client gets %v", w)
	}
	if n, each := rounds(10 * time.Second); n != 5 || each != 2*time.Second {
		t.Errorf("rounds(10s) = %d x %v", n, each)
	}
	if n, each := rounds(time.Second); n != 1 || each != time.Second {
		t.Errorf("rounds(1s) = %d x %v", n, each)
	}
	m := mix{list: 0.02, put: 0.05}
	if s := m.share(opGet); s < 0.929 || s > 0.931 {
		t.Errorf("get share %v", s)
	}
}
