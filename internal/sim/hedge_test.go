package sim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// TestGCPauses is issue 14's hedging goal: with GC-like pauses on one
// member (gc-pauses), p2c-ewma with hedged reads keeps its p99.9 within 2×
// the p99.9 of the same run's requests that no pause touched, for at most
// 5% extra reads. Round robin, least-outstanding and p2c-ewma without
// hedging are logged beside; round robin runs without ejection, as the
// stock clients do.
func TestGCPauses(t *testing.T) {
	t.Parallel()
	forSeeds(t, func(t *testing.T, seed uint64) {
		rows := []struct {
			name string
			k    runKey
		}{
			{"round-robin", runKey{scenario: "gc-pauses", policy: picker.RoundRobin, seed: seed, noEject: true}},
			{"least-outstanding", runKey{scenario: "gc-pauses", policy: picker.LeastOutstanding, seed: seed}},
			{"p2c-ewma", runKey{scenario: "gc-pauses", policy: picker.P2CEWMA, seed: seed}},
			{"p2c-ewma+hedging", runKey{scenario: "gc-pauses", policy: picker.P2CEWMA, seed: seed, hedge: true}},
		}
		var hedged Result
		for _, row := range rows {
			r := result(t, row.k)
			require.NotNil(t, r.Hedge, "%v: no hedge statistics", row.k)
			t.Logf("%-18s p99 %.1f ms p99.9 %.1f ms, healthy p99.9 %.1f ms, hedges %d (%.4f of reads, %d won), %d pauses",
				row.name, r.Latency.P99, r.Latency.P999, r.Hedge.Healthy.P999, r.Hedge.Hedges, r.Hedge.ExtraLoad, r.Hedge.HedgeWins, r.Hedge.Pauses)
			if !row.k.hedge {
				assert.Zero(t, r.Hedge.Hedges, "%s sent hedges without Options.Hedge", row.name)
			}
			hedged = r
		}
		h := hedged.Hedge
		assert.GreaterOrEqual(t, h.Pauses, 5, "pauses in the run (35 s at one every 2.2 s on average)")
		assert.Greater(t, h.HedgeWins, 0, "no copy ever answered first")
		assert.LessOrEqual(t, h.ExtraLoad, 0.05, "hedges over reads")
		assert.LessOrEqual(t, hedged.Latency.P999, 2*h.Healthy.P999, "hedged p99.9 over 2× the healthy p99.9")
	})
}

func TestPauseFaults(t *testing.T) {
	p := Pauses{Member: 1, MeanGap: 2 * time.Second, Min: 100 * time.Millisecond, Max: 300 * time.Millisecond}
	fs := pauseFaults(p, 7, time.Hour)
	require.NotEmpty(t, fs)
	var total, gaps time.Duration
	prevEnd := time.Duration(0)
	for _, f := range fs {
		assert.Equal(t, Blackhole, f.Kind)
		assert.Equal(t, 1, f.Member)
		d := f.End - f.Start
		assert.True(t, d >= p.Min && d <= p.Max, "pause of %v", d)
		assert.Greater(t, f.Start, prevEnd, "pauses overlap or touch")
		total += d
		gaps += f.Start - prevEnd
		prevEnd = f.End
	}
	n := time.Duration(len(fs))
	assert.InDelta(t, float64(200*time.Millisecond), float64(total/n), float64(10*time.Millisecond), "mean pause")
	assert.InDelta(t, float64(2*time.Second), float64(gaps/n), float64(150*time.Millisecond), "mean gap")
	assert.Equal(t, fs, pauseFaults(p, 7, time.Hour), "same seed, same schedule")

	sc, _ := Lookup("gc-pauses")
	sc.Pauses = &Pauses{Member: 9, MeanGap: time.Second, Min: 1, Max: 2}
	require.ErrorContains(t, sc.Validate(), "member 9")
	sc.Pauses = &Pauses{MeanGap: time.Second, Min: 3, Max: 2}
	require.ErrorContains(t, sc.Validate(), "must be positive and ordered")
	good, _ := Lookup("gc-pauses")
	_, err := Run(Options{Scenario: good, Hedge: &Hedge{Budget: 2}})
	require.ErrorContains(t, err, "budget 2")
}
