package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// The ratios that issue 11 judges etcdbalance by, computed from the rows
// of one run so that every comparison shares the machine's state.

func findResult(rs []*result, name string) *result {
	for _, r := range rs {
		if r.Policy == name {
			return r
		}
	}
	return nil
}

// ratio3 is a/b rounded, 0 when b is 0.
func ratio3(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round3(a / b)
}

// checkIncident compares etcdbalance with the lower p99 of round-robin
// and least-request; nil outside the incident scenario or without them.
func checkIncident(sc *scenario, rs []*result) *incidentCheck {
	eb := findResult(rs, "etcdbalance")
	if sc.name != "incident" || eb == nil {
		return nil
	}
	var low *result
	for _, name := range []string{"v3-roundrobin", "v3-leastrequest"} {
		if r := findResult(rs, name); r != nil && (low == nil || r.LatencyMS.P99 < low.LatencyMS.P99) {
			low = r
		}
	}
	if low == nil {
		return nil
	}
	c := &incidentCheck{
		P99MS:           eb.LatencyMS.P99,
		LowestPolicy:    low.Policy,
		LowestP99MS:     low.LatencyMS.P99,
		P99Ratio:        ratio3(eb.LatencyMS.P99, low.LatencyMS.P99),
		ReadMaxOverMean: eb.ReadServingMaxOverMean,
		Errors:          eb.Errors,
	}
	if rr := findResult(rs, "v3-roundrobin"); rr != nil {
		c.RoundRobinErrors = rr.Errors
	} else {
		c.RoundRobinErrors = -1
	}
	return c
}

// completeSlowCheck fills in the slowed row's ratios once every policy
// has run.
func completeSlowCheck(c *slowCheck, rs []*result) {
	if c == nil {
		return
	}
	if eb := findResult(rs, c.Policy); eb != nil {
		c.P99MS = eb.LatencyMS.P99
		c.OverHealthyP99 = ratio3(c.P99MS, c.HealthyP99MS)
	}
	if rr := findResult(rs, "v3-roundrobin"); rr != nil {
		c.RoundRobinP99MS = rr.LatencyMS.P99
		c.OverRoundRobinP99 = ratio3(c.P99MS, c.RoundRobinP99MS)
	}
}

// completePauseCheck fills in the paused row's ratios once every policy
// has run.
func completePauseCheck(c *pauseCheck, rs []*result) {
	if c == nil {
		return
	}
	if h := findResult(rs, c.Policy); h != nil {
		c.P999MS = h.LatencyMS.P999
		c.OverHealthyP999 = ratio3(c.P999MS, c.HealthyP999MS)
		c.CallsPerRequest = round4(h.ProxyCallsPerRequest)
	}
	c.HealthyCallsPerRequest = round4(c.HealthyCallsPerRequest)
	if p := findResult(rs, "etcdbalance"); p != nil && p.ProxyCallsPerRequest > 0 {
		c.PlainCallsPerRequest = round4(p.ProxyCallsPerRequest)
		c.ExtraCallsPerRequest = round4(c.CallsPerRequest - c.PlainCallsPerRequest)
	}
}

// checkStorm compares every row's writes with v3-roundrobin's.
func checkStorm(sc *scenario, rs []*result) *stormCheck {
	rr := findResult(rs, "v3-roundrobin")
	if !sc.storm || rr == nil || rr.Writes == nil {
		return nil
	}
	c := &stormCheck{Baseline: rr.Policy}
	for _, r := range rs {
		w := r.Writes
		if w == nil {
			continue
		}
		row := stormRow{
			Policy:             r.Policy,
			WriteThroughputRPS: w.ThroughputRPS,
			WriteP99MS:         w.LatencyMS.P99,
			ThroughputRatio:    ratio3(w.ThroughputRPS, rr.Writes.ThroughputRPS),
			P99Ratio:           ratio3(w.LatencyMS.P99, rr.Writes.LatencyMS.P99),
		}
		if len(w.RoundsRPS) == len(rr.Writes.RoundsRPS) {
			var per []float64
			for i, x := range w.RoundsRPS {
				if b := rr.Writes.RoundsRPS[i]; b > 0 {
					per = append(per, x/b)
				}
			}
			if len(per) > 0 {
				row.MedianRoundRatio = round3(median(per))
			}
		}
		c.Rows = append(c.Rows, row)
	}
	return c
}

// printChecks writes the comparisons that the run has, after the tables.
func printChecks(w io.Writer, rep *report) {
	if c := rep.Incident; c != nil {
		fmt.Fprintf(w, "\netcdbalance p99 %s ms / lowest of v3-roundrobin and v3-leastrequest (%s, %s ms) = %.3f; reads: max/mean share over the members serving them %.3f; errors %d (v3-roundrobin %d)\n",
			fmtMS(c.P99MS), c.LowestPolicy, fmtMS(c.LowestP99MS), c.P99Ratio, c.ReadMaxOverMean, c.Errors, c.RoundRobinErrors)
	}
	if c := rep.SlowMember; c != nil {
		fmt.Fprintf(w, "\nhealthy rounds (no member slowed, alternating with the slowed ones): %s p99 %s ms\n", c.Policy, fmtMS(c.HealthyP99MS))
		fmt.Fprintf(w, "%s p99 with the slow member %s ms = %.3f x healthy", c.Policy, fmtMS(c.P99MS), c.OverHealthyP99)
		if c.RoundRobinP99MS > 0 {
			fmt.Fprintf(w, ", %.3f x v3-roundrobin (%s ms)", c.OverRoundRobinP99, fmtMS(c.RoundRobinP99MS))
		}
		fmt.Fprintln(w)
	}
	if c := rep.GCPauses; c != nil {
		fmt.Fprintf(w, "\nhealthy rounds (no pause, alternating with the paused ones): %s p99.9 %s ms, %.4f calls at the members per request\n",
			c.Policy, fmtMS(c.HealthyP999MS), c.HealthyCallsPerRequest)
		fmt.Fprintf(w, "%s p99.9 with pauses %s ms = %.3f x healthy; %.4f calls per request", c.Policy, fmtMS(c.P999MS), c.OverHealthyP999, c.CallsPerRequest)
		if c.PlainCallsPerRequest > 0 {
			fmt.Fprintf(w, ", %+.4f against etcdbalance without hedging (%.4f)", c.ExtraCallsPerRequest, c.PlainCallsPerRequest)
		}
		fmt.Fprintln(w)
	}
	if c := rep.JobStorm; c != nil {
		fmt.Fprintf(w, "\nwrites (Txn creates, compare-and-swap updates, lease grants), ratios against %s from this run\n", c.Baseline)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, strings.Join([]string{"policy\t", "writes/s", "ratio", "median of rounds", "write p99 ms", "ratio", "CAS retries", "lost twice"}, "\t")+"\t")
		for _, row := range c.Rows {
			r := findResult(rep.Results, row.Policy)
			fmt.Fprintln(tw, strings.Join([]string{
				row.Policy + "\t",
				fmt.Sprintf("%.1f", row.WriteThroughputRPS),
				fmt.Sprintf("%.3f", row.ThroughputRatio),
				fmt.Sprintf("%.3f", row.MedianRoundRatio),
				fmtMS(row.WriteP99MS),
				fmt.Sprintf("%.3f", row.P99Ratio),
				fmt.Sprint(r.Writes.CASRetries),
				fmt.Sprint(r.Writes.CASConflicts),
			}, "\t")+"\t")
		}
		_ = tw.Flush()
	}
}
