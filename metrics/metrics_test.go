package metrics_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/etcdbalance/etcdbalance-go/metrics"
	"github.com/etcdbalance/etcdbalance-go/picker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

// fed returns a collector fed by an engine over members a, b and c, in
// which a has been ejected once and probed, and the adapter events of a
// cluster view have been reported.
func fed(t *testing.T) (*metrics.Collector, *picker.Picker) {
	col := metrics.New()
	clk := &clock{t: time.Unix(1700000000, 0)}
	eng, err := picker.New(picker.Config{Clock: clk, Rand: picker.NewSource(1), Events: col.Observe})
	require.NoError(t, err)
	require.NoError(t, eng.SetEndpoints([]string{"a", "b", "c"}))
	for i := 0; i < ejectAfter; i++ {
		tk, err := eng.PickAddr("a", picker.Unary)
		require.NoError(t, err)
		eng.Done(tk, picker.Outcome{Result: picker.Failed})
	}
	clk.t = clk.t.Add(time.Minute)
	tk, err := eng.Pick(picker.Request{Class: picker.ClassWrite}) // a's probe
	require.NoError(t, err)
	require.Equal(t, "a", tk.Addr())
	st, err := eng.Pick(picker.Request{Kind: picker.Stream})
	require.NoError(t, err)
	_ = st // left open

	eng.Emit(picker.Event{Kind: picker.EventLeaderChanged, Addr: "b"})
	eng.Emit(picker.Event{Kind: picker.EventViewAnswer, Addr: "c", Lag: 7})
	eng.Emit(picker.Event{Kind: picker.EventViewProbeFailed, Addr: "a", Reason: "Unavailable"})
	eng.Emit(picker.Event{Kind: picker.EventViewRound})
	eng.Emit(picker.Event{Kind: picker.EventGuardReissue, Addr: "c", Reason: picker.ReissueLeader})
	eng.Emit(picker.Event{Kind: picker.EventMarkedStale, Addr: "c"})
	return col, eng
}

// value returns the value of the series of name with the given labels,
// from the collector's text exposition.
func value(t *testing.T, col prometheus.Collector, name string, labels string) string {
	t.Helper()
	out := text(t, col, name)
	prefix := name + "{" + labels + "} "
	if labels == "" {
		prefix = name + " "
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return v
		}
	}
	t.Fatalf("no series %s%s in\n%s", name, labels, out)
	return ""
}

// text is the collector's exposition in the text format: the named
// metrics, or all of them.
func text(t *testing.T, col prometheus.Collector, names ...string) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(col))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var b strings.Builder
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if len(names) == 0 || slices.Contains(names, mf.GetName()) {
			require.NoError(t, enc.Encode(mf))
		}
	}
	return b.String()
}

func TestCollector(t *testing.T) {
	col, eng := fed(t)
	assert.Equal(t, "1", value(t, col, "etcdbalance_ejections_total", `member="a",reason="failures"`))
	assert.Equal(t, "0", value(t, col, "etcdbalance_ejections_total", `member="b",reason="failures"`))
	assert.Equal(t, "1", value(t, col, "etcdbalance_ejection_probes_total", `member="a"`))
	assert.Equal(t, "1", value(t, col, "etcdbalance_ejected", `member="a"`))
	assert.Equal(t, "5", value(t, col, "etcdbalance_failures_total", `member="a"`))
	assert.Equal(t, "5", value(t, col, "etcdbalance_picks_total", `class="point",member="a"`))
	assert.Equal(t, "1", value(t, col, "etcdbalance_picks_total", `class="write",member="a"`))
	assert.Equal(t, "1", value(t, col, "etcdbalance_requests_in_flight", `member="a"`))
	assert.Equal(t, "1", value(t, col, "etcdbalance_leader", `member="b"`))
	assert.Equal(t, "0", value(t, col, "etcdbalance_leader", `member="c"`))
	assert.Equal(t, "7", value(t, col, "etcdbalance_lag_entries", `member="c"`))
	assert.Equal(t, "1", value(t, col, "etcdbalance_view_probe_failures_total", `member="a"`))
	assert.Equal(t, "1", value(t, col, "etcdbalance_view_probe_rounds_total", ""))
	assert.Equal(t, "1", value(t, col, "etcdbalance_guard_reissues_total", `to="leader"`))
	assert.Equal(t, "1", value(t, col, "etcdbalance_marks_total", `mark="stale",member="c"`))
	streams := 0
	for _, s := range eng.Snapshot() {
		streams += int(s.Streams)
	}
	assert.Equal(t, 1, streams)

	// A member that leaves takes its series along.
	require.NoError(t, eng.SetEndpoints([]string{"b", "c"}))
	assert.NotContains(t, text(t, col), `member="a"`)

	// Events of another engine are not this client's.
	other, err := picker.New(picker.Config{Events: col.Observe})
	require.NoError(t, err)
	other.Emit(picker.Event{Kind: picker.EventViewRound})
	assert.Equal(t, "1", value(t, col, "etcdbalance_view_probe_rounds_total", ""))
}

// TestPedantic: a pedantic registry accepts everything the collector
// exports (descriptions match the metrics). tests/etcdbalance runs
// promlint over it: promlint's dependencies would add a module to the
// build list of this module's users.
func TestPedantic(t *testing.T) {
	col, _ := fed(t)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(col))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(mfs), 14, "every metric family is exported")
}

// TestUnbound: a collector that has seen no event exports the counters
// that need no engine, and nothing by member.
func TestUnbound(t *testing.T) {
	col := metrics.New()
	out := text(t, col)
	assert.Contains(t, out, "etcdbalance_view_probe_rounds_total 0")
	assert.NotContains(t, out, "member=")
}

// ejectAfter is picker.Config.EjectAfter's default.
const ejectAfter = 5
