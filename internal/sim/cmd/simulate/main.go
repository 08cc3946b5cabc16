// Command simulate runs one scenario of the load-balancing simulation
// (package internal/sim) under every picker policy and prints the results.
//
// Usage:
//
//	go run ./internal/sim/cmd/simulate -scenario NAME [-seed N] [-json]
//	        (NAME also one of the scale scenarios: scale-5-60, scale-5-90,
//	        scale-7-60, scale-7-90)
//	        [-policy p2c-ewma,round-robin,...] [-eject-after N]
//	        [-estimates per-class|shared|normalized] [-leader reserve|avoid|ordinary]
//	        [-reserve-ratio R] [-hedge]
//
// The last three matter only for the scenarios with a leader (lists,
// slow-followers, saturated): how request classes and the leader are
// described to the engine, and its knob for the leader.
//
// Without -json it prints a table; with -json exactly one JSON object:
//
//	{"scenario": "...", "seed": N, "model": {...}, "results": [{"policy": "...",
//	 "requests": N, "errors": N, "lost": N, "latency_ms": {"p50": x, ...},
//	 "member_share": [x, ...], "max_over_mean_share": x, ...}]}
//
// Bad flags are reported on standard error, naming the bad value, with exit
// status 2.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/etcdbalance/etcdbalance-go/internal/sim"
	"github.com/etcdbalance/etcdbalance-go/picker"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	names := sim.ScenarioNames()
	for _, sc := range sim.ScaleScenarios() {
		names = append(names, sc.Name)
	}
	scenario := fs.String("scenario", "", "scenario to run, one of: "+strings.Join(names, ", "))
	seed := fs.Uint64("seed", 1, "random seed; the same seed gives the same output")
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	policies := fs.String("policy", "", "comma-separated policies to run (default: all)")
	ejectAfter := fs.Int("eject-after", 0, "engine EjectAfter for every policy: 0 gives p2c-ewma and least-outstanding the engine default and runs the stock-client baselines (round-robin, shuffled-pin, pinned) without ejection; -1 disables ejection everywhere")
	estimates := fs.String("estimates", "per-class", "how request classes reach the engine: per-class (Request.Class), shared (one estimate) or normalized (one estimate, range samples divided by their size)")
	leader := fs.String("leader", "reserve", "how reads treat the leader: reserve (Request.Reserve), avoid (Request.Avoid) or ordinary")
	hedge := fs.Bool("hedge", false, "add a p2c-ewma row with hedged reads (sim.Hedge defaults: after the member's p95, budget 5% of reads)")
	reserveRatio := fs.Float64("reserve-ratio", 0, "engine ReserveRatio, for -leader reserve (0: the engine default)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2 // the flag package has printed the error and the usage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "simulate: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q", fs.Arg(0))
	}
	if *scenario == "" {
		return fail("-scenario is required (one of: %s)", strings.Join(names, ", "))
	}
	sc, ok := sim.Lookup(*scenario)
	if !ok {
		return fail("unknown scenario %q (want one of: %s)", *scenario, strings.Join(names, ", "))
	}
	pols := picker.Policies()
	if *policies != "" {
		pols = nil
		for _, name := range strings.Split(*policies, ",") {
			p, err := picker.ParsePolicy(strings.TrimSpace(name))
			if err != nil || name == "" {
				return fail("unknown policy %q in -policy (want one of: %v)", name, picker.Policies())
			}
			pols = append(pols, p)
		}
	}
	if *ejectAfter < -1 {
		return fail("-eject-after %d: want -1 (off), 0 (default) or a positive count", *ejectAfter)
	}
	est, err := sim.ParseEstimates(*estimates)
	if err != nil {
		return fail("-estimates: %v", err)
	}
	lr, err := sim.ParseLeaderRule(*leader)
	if err != nil {
		return fail("-leader: %v", err)
	}
	base := sim.Options{
		Engine:    picker.Config{EjectAfter: *ejectAfter, ReserveRatio: *reserveRatio},
		Estimates: est, Leader: lr,
	}
	if _, err := picker.New(base.Engine); err != nil {
		return fail("%v", err)
	}
	rep, err := sim.RunScenario(sc, *seed, pols, base)
	if err == nil && *hedge {
		opt := base
		opt.Scenario, opt.Policy, opt.Seed, opt.Hedge = sc, picker.P2CEWMA, *seed, &sim.Hedge{}
		var r sim.Result
		if r, err = sim.Run(opt); err == nil {
			rep.Results = append(rep.Results, r)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "simulate:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "simulate:", err)
			return 1
		}
		return 0
	}
	printTable(stdout, rep)
	return 0
}

func printTable(w io.Writer, rep sim.Report) {
	m := rep.Model
	fmt.Fprintf(w, "scenario %s, seed %d: %d clients × %d loops, %d members × %d workers, service %.3g ms (exp), think %.3g ms (exp), target load %.2f of %.0f req/s, deadline %.0f ms, warm-up %.0f s, measured %.0f s\n",
		rep.Scenario, rep.Seed, m.Clients, m.Loops, m.Members, m.Workers, m.MeanServiceMs, m.ThinkMs,
		m.TargetLoad, m.CapacityRps, m.DeadlineMs, m.WarmupS, m.MeasureS)
	for _, f := range m.Faults {
		end := "end of run"
		if f.EndS > 0 {
			end = fmt.Sprintf("%gs", f.EndS)
		}
		extra := ""
		if f.Factor != 0 {
			extra = fmt.Sprintf(" ×%g", f.Factor)
		}
		fmt.Fprintf(w, "fault: member %d %s%s from %gs to %s\n", f.Member, f.Kind, extra, f.StartS, end)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy            \trequests\terrors\tlost\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tutil\tmax/mean\tshares\t")
	for _, r := range rep.Results {
		shares := make([]string, len(r.MemberShare))
		for i, s := range r.MemberShare {
			shares[i] = fmt.Sprintf("%.3f", s)
		}
		fmt.Fprintf(tw, "%-18s\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%.3f\t%s\t\n",
			rowName(r), r.Requests, r.Errors, r.Lost, r.Latency.P50, r.Latency.P90, r.Latency.P99,
			r.Latency.P999, r.Utilization, r.MaxOverMeanShare, strings.Join(shares, " "))
	}
	tw.Flush()

	if len(rep.Results) > 0 && rep.Results[0].Mix != nil {
		fmt.Fprintf(w, "\nby class (estimates %s, leader %s; leader = member %d, fair share %.3f):\n", rep.Estimates, rep.Leader, m.Mix.Leader, rep.Results[0].Mix.FairShare)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "policy            	point p50	point p99	range p50	range p99	write p99	leader reads	follower max/mean	read shares	")
		for _, r := range rep.Results {
			x := r.Mix
			shares := make([]string, len(x.ReadShare))
			for i, s := range x.ReadShare {
				shares[i] = fmt.Sprintf("%.3f", s)
			}
			fmt.Fprintf(tw, "%-18s\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.4f\t%.3f\t%s\t\n", r.Policy, x.Point.P50, x.Point.P99,
				x.Range.P50, x.Range.P99, x.Write.P99, x.LeaderReadShare, x.FollowerMaxOverMean, strings.Join(shares, " "))
		}
		tw.Flush()
	}
	if len(rep.Results) > 0 && rep.Results[0].Blackhole != nil {
		b := rep.Results[0].Blackhole
		fmt.Fprintf(w, "\nblack hole on member %d from %gs to %gs:\n", b.Member, b.StartS, b.EndS)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "policy            \tcharged clients\tmax charge delay ms\tpicks after charge\tto member\tshare\twindow requests\tdeadline errors\trate\tdropped at end\t")
		for _, r := range rep.Results {
			b := r.Blackhole
			fmt.Fprintf(tw, "%-18s\t%d\t%.1f\t%d\t%d\t%.4f\t%d\t%d\t%.4f\t%d\t\n", r.Policy, b.ChargedClients,
				b.MaxChargeDelayMs, b.RequestsAfterCharge, b.ToMemberAfterCharge, b.ShareAfterCharge,
				b.WindowRequests, b.WindowDeadlineErrors, b.WindowErrorRate, b.DroppedAtEnd)
		}
		tw.Flush()
	}
	if len(rep.Results) > 0 && rep.Results[0].Oscillation != nil {
		printPhases(w, rep)
	}
	if len(rep.Results) > 0 && rep.Results[len(rep.Results)-1].Hedge != nil {
		fmt.Fprintf(w, "\nhedging and pauses (healthy: requests no pause touched; extra: hedges over reads, whole run):\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "policy            \tp99 ms\tp99.9 ms\thealthy p99.9 ms\thedges\textra\tcopy won\tpauses\t")
		for _, r := range rep.Results {
			if h := r.Hedge; h != nil {
				fmt.Fprintf(tw, "%-18s\t%.1f\t%.1f\t%.1f\t%d\t%.4f\t%d\t%d\t\n", rowName(r), r.Latency.P99, r.Latency.P999,
					h.Healthy.P999, h.Hedges, h.ExtraLoad, h.HedgeWins, h.Pauses)
			}
		}
		tw.Flush()
	}
	if len(rep.Results) > 0 && rep.Results[0].Recovery != nil {
		rc := rep.Results[0].Recovery
		fmt.Fprintf(w, "\nrecovery of member %d, healed at %gs (share / fair share %.2f):\n", rc.Member, rc.HealS, rc.FairShare)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "policy            \theal+15..20s\tpeak 1s window\tpeak at s\tfirst ≥0.75 after s\t")
		for _, r := range rep.Results {
			rc := r.Recovery
			fmt.Fprintf(tw, "%-18s\t%.3f\t%.3f\t%g\t%g\t\n", r.Policy, rc.RecoveredRatio, rc.PeakRatio, rc.PeakAtS, rc.FirstFairS)
		}
		tw.Flush()
	}
}

// printPhases prints the phases of a scale scenario (sim.ScaleScenario):
// p99 and max/mean share of each phase, and the share oscillation.
func printPhases(w io.Writer, rep sim.Report) {
	fmt.Fprintf(w, "\nphases (max/mean over the steady windows; oscillation = share std dev over them):\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "policy            \toscillation\t"
	for _, ps := range rep.Results[0].Phases {
		head += fmt.Sprintf("%g-%gs p99 ms\tmax/mean\t", ps.StartS, ps.EndS)
	}
	fmt.Fprintln(tw, head)
	for _, r := range rep.Results {
		line := fmt.Sprintf("%-18s\t%.4f\t", r.Policy, r.Oscillation.Max)
		for _, ps := range r.Phases {
			line += fmt.Sprintf("%.1f\t%.3f\t", ps.Latency.P99, ps.MaxOverMeanShare)
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}

// rowName is the policy of r, marked when its reads were hedged.
func rowName(r sim.Result) string {
	if r.Hedged {
		return string(r.Policy) + "+hedging"
	}
	return string(r.Policy)
}
