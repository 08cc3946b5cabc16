package sim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPhaseStats checks the phase arithmetic on a short run: phases, their
// windows and the pooled oscillation.
func TestPhaseStats(t *testing.T) {
	sc := ScaleScenario(5, 0.6)
	sc.Clients, sc.Measure = 20, 2*scalePhase
	sc.Faults = nil
	r, err := Run(Options{Scenario: sc, Seed: 1})
	require.NoError(t, err)
	require.Len(t, r.Phases, 2)
	assert.Equal(t, 5.0, r.Phases[0].StartS)
	assert.Equal(t, 15.0, r.Phases[0].EndS)
	assert.Equal(t, 25.0, r.Phases[1].EndS)
	require.NotNil(t, r.Oscillation)
	assert.Equal(t, 2*int(scalePhase-scaleSettle)/1e9, r.Oscillation.Windows)
	for _, ps := range r.Phases {
		sum := 0.0
		for m, s := range ps.MemberShare {
			sum += s
			assert.Greater(t, ps.ShareStdDev[m], 0.0, "member %d: no spread over 7 windows of ~40 picks", m)
		}
		assert.InDelta(t, 1, sum, 1e-4)
		assert.Greater(t, ps.Latency.P99, 0.0)
	}
	for m, sd := range r.Oscillation.ShareStdDev {
		assert.LessOrEqual(t, sd, r.Oscillation.Max, "member %d", m)
	}

	bad := sc
	bad.Settle = bad.Phase
	require.ErrorContains(t, bad.Validate(), "settle 10s")
	bad = sc
	bad.Phase = 1500 * time.Millisecond
	require.ErrorContains(t, bad.Validate(), "phase 1.5s")
}
