package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// report is the JSON document -json writes. The fields up to V2Results
// are the documented shape; the rest are additions.
type report struct {
	Scenario  string    `json:"scenario"`
	Members   int       `json:"members"`
	Clients   int       `json:"clients"`
	DurationS float64   `json:"duration_s"`
	Machine   machine   `json:"machine"`
	Results   []*result `json:"results"`
	V2Results []*result `json:"v2_results"`

	About       string    `json:"about"`
	Concurrency int       `json:"concurrency"`
	Seed        int64     `json:"seed"`
	Keys        int       `json:"keys"`
	RateRPS     float64   `json:"rate_rps"` // offered, over all clients; 0 = full speed
	WarmupS     float64   `json:"warmup_s"`
	External    bool      `json:"external"`
	V3          *setup    `json:"v3,omitempty"`
	V2          *setup    `json:"v2,omitempty"`
	Ratio       *ratio    `json:"throughput_ratio,omitempty"`
	Skipped     []skipped `json:"skipped"`
	Notes       []string  `json:"notes"`

	// The comparisons of issue 11, each in its own scenario.
	Incident   *incidentCheck `json:"incident_check,omitempty"`
	SlowMember *slowCheck     `json:"slow_member,omitempty"`
	GCPauses   *pauseCheck    `json:"gc_pauses,omitempty"`
	JobStorm   *stormCheck    `json:"job_storm,omitempty"`
}

// incidentCheck compares etcdbalance with the better of the stock
// balancers in the incident scenario.
type incidentCheck struct {
	P99MS        float64 `json:"etcdbalance_p99_ms"`
	LowestPolicy string  `json:"lowest_other_policy"`
	LowestP99MS  float64 `json:"lowest_other_p99_ms"` // of v3-roundrobin and v3-leastrequest
	P99Ratio     float64 `json:"p99_over_lowest_other_p99"`
	// ReadMaxOverMean is etcdbalance's read_serving_max_over_mean_share.
	ReadMaxOverMean  float64 `json:"read_serving_max_over_mean_share"`
	Errors           int64   `json:"etcdbalance_errors"`
	RoundRobinErrors int64   `json:"roundrobin_errors"`
}

// slowCheck compares etcdbalance with one member slowed against the same
// clients on the same cluster with no member slowed (the healthy rounds,
// alternating with the slowed ones) and against round-robin.
type slowCheck struct {
	Policy            string  `json:"policy"`
	HealthyP99MS      float64 `json:"healthy_p99_ms"`
	P99MS             float64 `json:"p99_ms"`
	RoundRobinP99MS   float64 `json:"roundrobin_p99_ms,omitempty"`
	OverHealthyP99    float64 `json:"p99_over_healthy_p99"`
	OverRoundRobinP99 float64 `json:"p99_over_roundrobin_p99,omitempty"`
	Healthy           *result `json:"healthy"` // the healthy phase's row
}

// pauseCheck compares etcdbalance-hedged with one member pausing again and
// again against the same clients on the same cluster with no pause (the
// healthy rounds, alternating with the paused ones), issue 14's goal:
// p99.9 ≤ 2× the healthy p99.9 for ≤ 5% extra reads. The extra reads are
// the calls that reached the members per request, above the plain
// etcdbalance row's (the view's probes and the watches count in both).
type pauseCheck struct {
	Policy                 string  `json:"policy"`
	HealthyP999MS          float64 `json:"healthy_p999_ms"`
	P999MS                 float64 `json:"p999_ms"`
	OverHealthyP999        float64 `json:"p999_over_healthy_p999"`
	CallsPerRequest        float64 `json:"calls_per_request"`
	HealthyCallsPerRequest float64 `json:"healthy_calls_per_request"`
	// PlainCallsPerRequest is the etcdbalance row's, without hedging; 0
	// when the run has no such row.
	PlainCallsPerRequest float64 `json:"plain_calls_per_request,omitempty"`
	ExtraCallsPerRequest float64 `json:"extra_calls_per_request_over_plain,omitempty"`
	Healthy              *result `json:"healthy"` // the healthy rounds' row
}

// stormCheck is the job-storm scenario's write comparison, each policy
// against v3-roundrobin from the same run.
type stormCheck struct {
	Baseline string     `json:"baseline"`
	Rows     []stormRow `json:"rows"`
}

type stormRow struct {
	Policy             string  `json:"policy"`
	WriteThroughputRPS float64 `json:"write_throughput_rps"`
	WriteP99MS         float64 `json:"write_p99_ms"`
	ThroughputRatio    float64 `json:"write_throughput_ratio"`
	P99Ratio           float64 `json:"write_p99_ratio"`
	// MedianRoundRatio is the median of the per-round write throughput
	// ratios, less exposed to drift than the pooled one.
	MedianRoundRatio float64 `json:"write_throughput_ratio_median_of_rounds"`
}

type machine struct {
	CPUs int    `json:"cpus"`
	Go   string `json:"go"`
	OS   string `json:"os"`
	Arch string `json:"arch"`
	// LoadAvg is the 1-minute load average before the start: other work
	// on the machine shows up in every number.
	LoadAvg float64 `json:"load_avg_1m_start"`
}

// setup describes one cluster as the policies found it.
type setup struct {
	MemberNames []string `json:"member_names"`
	Leader      int      `json:"leader"` // index at the start, -1 unknown
	// FaultMember is the member the scenario's fault hits, -1 none.
	FaultMember int `json:"fault_member"`
	// BandwidthCap is each member proxy's cap in bytes per second, 0 none.
	BandwidthCap int64 `json:"bandwidth_cap_bytes_per_s"`
	// BytesPerRequest is what one request of each kind moved through a
	// proxy, both directions, as measured before the first policy.
	BytesPerRequest map[string]float64 `json:"bytes_per_request,omitempty"`
	// OfferedBytesPerS is the offered load in bytes per second, for the
	// busiest client and for all clients together, from those measurements.
	OfferedBusy  float64 `json:"offered_busiest_client_bytes_per_s,omitempty"`
	OfferedTotal float64 `json:"offered_total_bytes_per_s,omitempty"`
}

// ratio is the overhead scenario's throughput comparison.
type ratio struct {
	Policy   string    `json:"policy"`
	Baseline string    `json:"baseline"`
	Median   float64   `json:"median"`
	Rounds   []float64 `json:"rounds"`
}

type skipped struct {
	Policy string `json:"policy"`
	Reason string `json:"reason"`
}

type latencies struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// result is one policy's row.
type result struct {
	Policy        string    `json:"policy"`
	Requests      int64     `json:"requests"`
	Errors        int64     `json:"errors"`
	ThroughputRPS float64   `json:"throughput_rps"`
	LatencyMS     latencies `json:"latency_ms"`
	MemberShare   []float64 `json:"member_share"`
	MaxOverMean   float64   `json:"max_over_mean_share"`

	About          string           `json:"about"`
	ErrorKinds     map[string]int64 `json:"error_kinds"`
	MemberRequests []int64          `json:"member_requests"`
	// MemberBytesPerS is what went through each member's proxy, both
	// directions, per second of measurement (in-process clusters only).
	MemberBytesPerS []float64 `json:"member_bytes_per_s,omitempty"`
	// MemberUtilization is MemberBytesPerS over the bandwidth cap.
	MemberUtilization []float64 `json:"member_utilization,omitempty"`
	// MemberP99MS is the p99 latency of the requests each member answered
	// (v3 only: the v2 client does not tell which request went where).
	MemberP99MS []float64 `json:"member_p99_ms,omitempty"`
	WatchEvents int64     `json:"watch_events"`
	Leader      int       `json:"leader"`
	RoundsRPS   []float64 `json:"rounds_rps,omitempty"`

	// OpLatencyMS splits LatencyMS by operation (get, list, put, ...).
	OpLatencyMS map[string]latencies `json:"op_latency_ms,omitempty"`
	// MemberReadShare is each member's share of the reads (Gets, Lists);
	// the read-serving members are those with at least half the even
	// share, so that a leader held in reserve for reads is not counted.
	MemberReadShare        []float64 `json:"member_read_share,omitempty"`
	ReadServingMembers     []int     `json:"read_serving_members,omitempty"`
	ReadServingMaxOverMean float64   `json:"read_serving_max_over_mean_share,omitempty"`
	// Writes are the requests that go through raft (job-storm only).
	Writes          *classResult `json:"writes,omitempty"`
	LeaseKeepAlives int64        `json:"lease_keepalives,omitempty"`
	// ProxyCallsPerRequest is the gRPC calls that reached the members'
	// proxies per request the clients made (gc-pauses): above 1 by the
	// hedged copies, the cluster view's probes and the keep-alives.
	ProxyCallsPerRequest float64 `json:"proxy_calls_per_request,omitempty"`

	sorted []time.Duration // every latency, ascending, for the plots
}

// classResult is one class of requests of a row.
type classResult struct {
	Requests      int64     `json:"requests"`
	Errors        int64     `json:"errors"`
	ThroughputRPS float64   `json:"throughput_rps"` // successful, per second
	LatencyMS     latencies `json:"latency_ms"`
	RoundsRPS     []float64 `json:"rounds_rps,omitempty"`
	CASRetries    int64     `json:"cas_retries"`
	CASConflicts  int64     `json:"cas_conflicts"` // lost the retry too
}

// writeStats summarises the writes of segs; perRound keeps each
// segment's write throughput.
func writeStats(segs []*segment, perRound bool) *classResult {
	c := &classResult{}
	var lat []time.Duration
	var elapsed time.Duration
	for _, s := range segs {
		var ok int64
		for i, o := range s.ops {
			if !o.write() {
				continue
			}
			lat = append(lat, s.lat[i])
			c.Requests++
			if s.failed[i] {
				c.Errors++
			} else {
				ok++
			}
		}
		elapsed += s.elapsed
		c.CASRetries += s.casRetries
		c.CASConflicts += s.casConflicts
		if perRound && s.elapsed > 0 {
			c.RoundsRPS = append(c.RoundsRPS, round1(float64(ok)/s.elapsed.Seconds()))
		}
	}
	slices.Sort(lat)
	if elapsed > 0 {
		c.ThroughputRPS = round1(float64(c.Requests-c.Errors) / elapsed.Seconds())
	}
	c.LatencyMS = summarise(lat)
	return c
}

// summarise gives the percentiles of sorted.
func summarise(sorted []time.Duration) latencies {
	l := latencies{
		P50:  ms(percentile(sorted, 50)),
		P90:  ms(percentile(sorted, 90)),
		P99:  ms(percentile(sorted, 99)),
		P999: ms(percentile(sorted, 99.9)),
	}
	if len(sorted) > 0 {
		l.Max = ms(sorted[len(sorted)-1])
	}
	return l
}

// opLatencies splits the latencies of segs by operation.
func opLatencies(segs []*segment) map[string]latencies {
	per := map[op][]time.Duration{}
	for _, s := range segs {
		for i, o := range s.ops {
			per[o] = append(per[o], s.lat[i])
		}
	}
	if len(per) == 0 {
		return nil
	}
	out := map[string]latencies{}
	for o, l := range per {
		slices.Sort(l)
		out[o.String()] = summarise(l)
	}
	return out
}

// readShares returns each member's share of the successful reads, the
// members serving reads (at least half the even share) and the largest
// share over the mean among those; nil when no read was attributed.
func readShares(segs []*segment, members int) ([]float64, []int, float64) {
	counts := make([]int64, members)
	var total int64
	for _, s := range segs {
		for i, o := range s.ops {
			if m := s.member[i]; !o.write() && m >= 0 && int(m) < members && !s.failed[i] {
				counts[m]++
				total++
			}
		}
	}
	if total == 0 {
		return nil, nil, 0
	}
	share := make([]float64, members)
	var serving []int
	sum, largest := 0.0, 0.0
	for i, c := range counts {
		share[i] = float64(c) / float64(total)
		if share[i] >= 0.5/float64(members) {
			serving = append(serving, i)
			sum += share[i]
			largest = max(largest, share[i])
		}
		share[i] = round4(share[i])
	}
	return share, serving, round3(largest / (sum / float64(len(serving))))
}

// newResult summarises the segments of one policy; perRound keeps each
// segment's throughput (the rounds of the overhead scenario).
func newResult(pol *policy, segs []*segment, bytes []int64, capBytes int64, perRound bool) *result {
	r := &result{Policy: pol.name, About: pol.about, ErrorKinds: map[string]int64{}, Leader: -1}
	var elapsed time.Duration
	n := 0
	for _, s := range segs {
		n += len(s.lat)
	}
	r.sorted = make([]time.Duration, 0, n)
	for _, s := range segs {
		r.sorted = append(r.sorted, s.lat...)
		r.Requests += s.requests
		r.Errors += s.errors
		for k, v := range s.kinds {
			r.ErrorKinds[k] += v
		}
		if r.MemberRequests == nil {
			r.MemberRequests = make([]int64, len(s.served))
		}
		for i, v := range s.served {
			r.MemberRequests[i] += v
		}
		elapsed += s.elapsed
		if perRound {
			r.RoundsRPS = append(r.RoundsRPS, round1(float64(s.requests-s.errors)/s.elapsed.Seconds()))
		}
	}
	r.MemberP99MS = memberP99(segs, len(r.MemberRequests))
	slices.Sort(r.sorted)
	if elapsed > 0 {
		r.ThroughputRPS = round1(float64(r.Requests-r.Errors) / elapsed.Seconds())
	}
	r.LatencyMS = summarise(r.sorted)
	r.OpLatencyMS = opLatencies(segs)
	r.MemberReadShare, r.ReadServingMembers, r.ReadServingMaxOverMean = readShares(segs, len(r.MemberRequests))
	r.MemberShare, r.MaxOverMean = shares(r.MemberRequests)
	if bytes != nil && elapsed > 0 {
		for _, b := range bytes {
			bps := float64(b) / elapsed.Seconds()
			r.MemberBytesPerS = append(r.MemberBytesPerS, math.Round(bps))
			if capBytes > 0 {
				r.MemberUtilization = append(r.MemberUtilization, round3(bps/float64(capBytes)))
			}
		}
	}
	return r
}

// memberP99 returns the p99 latency per answering member, nil when no
// request was attributed to a member.
func memberP99(segs []*segment, members int) []float64 {
	per := make([][]time.Duration, members)
	any := false
	for _, s := range segs {
		for i, m := range s.member {
			if m >= 0 && int(m) < members {
				per[m] = append(per[m], s.lat[i])
				any = true
			}
		}
	}
	if !any {
		return nil
	}
	out := make([]float64, members)
	for i, l := range per {
		slices.Sort(l)
		out[i] = ms(percentile(l, 99))
	}
	return out
}

// percentile returns the nearest-rank p-th percentile of sorted: the
// smallest value with at least p% of the values at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The epsilon keeps float error (0.999*1000 = 999.0000000000001) from
	// moving the rank up by one.
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// shares returns each member's share of the served requests and the
// largest share over the mean share (1 when even, len(counts) when one
// member served everything; 0 when nothing was served).
func shares(counts []int64) ([]float64, float64) {
	out := make([]float64, len(counts))
	var total int64
	for _, c := range counts {
		total += c
	}
	if total == 0 || len(counts) == 0 {
		return out, 0
	}
	largest := 0.0
	for i, c := range counts {
		out[i] = float64(c) / float64(total)
		largest = max(largest, out[i])
	}
	ratio := largest * float64(len(counts)) // mean share is 1/len
	for i := range out {
		out[i] = round4(out[i])
	}
	return out, round3(ratio)
}

// median of a non-empty slice (the mean of the middle two when even).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round1(x float64) float64 { return math.Round(x*10) / 10 }
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
func round4(x float64) float64 { return math.Round(x*10000) / 10000 }

// printTable writes one table: a row per result, a column per member.
func printTable(w io.Writer, title string, st *setup, rs []*result) {
	fmt.Fprintf(w, "\n%s\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"policy\t", "requests", "errors", "req/s", "p50 ms", "p99 ms", "p99.9 ms"}
	for i, name := range st.MemberNames {
		label := name
		if i == st.Leader {
			label += "*"
		}
		if i == st.FaultMember {
			label += "!"
		}
		head = append(head, label)
	}
	head = append(head, "max/mean")
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, r := range rs {
		row := []string{
			r.Policy + "\t",
			fmt.Sprint(r.Requests),
			fmt.Sprint(r.Errors),
			fmt.Sprintf("%.1f", r.ThroughputRPS),
			fmtMS(r.LatencyMS.P50),
			fmtMS(r.LatencyMS.P99),
			fmtMS(r.LatencyMS.P999),
		}
		for _, s := range r.MemberShare {
			row = append(row, fmt.Sprintf("%.3f", s))
		}
		row = append(row, fmt.Sprintf("%.2f", r.MaxOverMean))
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	_ = tw.Flush()
	legend := "member columns: share of the requests each member answered; * leader at the start"
	if st.FaultMember >= 0 {
		legend += "; ! the faulted member"
	}
	fmt.Fprintln(w, legend)
	if st.BandwidthCap > 0 {
		fmt.Fprintf(w, "bandwidth cap %s per member; busiest member's use of it:", mbps(float64(st.BandwidthCap)))
		for _, r := range rs {
			if len(r.MemberUtilization) > 0 {
				fmt.Fprintf(w, " %s %.0f%%", r.Policy, 100*slices.Max(r.MemberUtilization))
			}
		}
		fmt.Fprintln(w)
	}
}

func fmtMS(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

func mbps(bytesPerS float64) string { return fmt.Sprintf("%.1f MB/s", bytesPerS/1e6) }
