package etcdbalance_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/etcdbalance/etcdbalance-go/etcdbalance"
	"github.com/etcdbalance/etcdbalance-go/internal/etcdcluster"
	"github.com/etcdbalance/etcdbalance-go/metrics"
	"github.com/etcdbalance/etcdbalance-go/picker"
)

// eventLog records a client's events, safe for concurrent use.
type eventLog struct {
	mu  sync.Mutex
	evs []picker.Event
}

func (l *eventLog) add(ev picker.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) all() []picker.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]picker.Event(nil), l.evs...)
}

// count returns how many events of kind there are (about addr, unless "").
func (l *eventLog) count(kind picker.EventKind, addr string) int {
	n := 0
	for _, ev := range l.all() {
		if ev.Kind == kind && (addr == "" || ev.Addr == addr) {
			n++
		}
	}
	return n
}

// inOrder reports whether seq occurs, in that order, among what (each a
// kind, or a log message), not necessarily next to each other.
func inOrder[T comparable](got, seq []T) bool {
	i := 0
	for _, g := range got {
		if i < len(seq) && g == seq[i] {
			i++
		}
	}
	return i == len(seq)
}

// observed returns a client config whose logger is a zap observer at
// level, with the observer's logs.
func observed(eps []string, level zapcore.Level) (clientv3.Config, *observer.ObservedLogs) {
	core, logs := observer.New(level)
	cfg := clientConfig(eps)
	cfg.Logger = zap.New(core)
	return cfg, logs
}

// series returns the value of one series in the collector's output, "" if
// there is none.
func series(t *testing.T, col prometheus.Collector, name, labels string) string {
	t.Helper()
	out, err := testutil.CollectAndFormat(col, expfmt.TypeTextPlain, name)
	require.NoError(t, err)
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, name+"{"+labels+"} "); ok {
			return v
		}
	}
	return ""
}

// TestBlackholeEvents: a black-holed member is ejected, probed when its
// ejection ends and restored once the black hole ends, and the client says
// so, in that order: through the event callback, in the log lines written
// through clientv3.Config.Logger, and in etcdbalance_ejections_total.
func TestBlackholeEvents(t *testing.T) {
	const deadline = time.Second
	c := startCluster(t, etcdcluster.Config{Size: 3})
	var log eventLog
	col := metrics.New()
	cfg, logs := observed(c.Endpoints(), zapcore.InfoLevel)
	cli := newBalanced(t, cfg, etcdbalance.WithPickerConfig(picker.Config{Events: func(ev picker.Event) {
		log.add(ev)
		col.Observe(ev)
	}}))
	ctx := context.Background()
	_, err := cli.Put(ctx, "bh", "v")
	require.NoError(t, err)
	waitRounds(t, cli, 1)
	_, bh := follower(t, c)
	addr := bh.ClientAddr()

	bh.Proxy().Blackhole(true)
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { hammer(lctx, 8, 0, gets(cli, "bh", deadline)) })
	defer func() { stop(); wg.Wait() }()
	waitFor(t, 60*time.Second, "the black-holed member to be ejected and probed", func() bool {
		return log.count(picker.EventProbe, addr) > 0
	})
	bh.Proxy().Blackhole(false)
	waitFor(t, 90*time.Second, "the member to be restored", func() bool {
		return log.count(picker.EventRestored, addr) > 0
	})
	stop()
	wg.Wait()

	var kinds []picker.EventKind
	for _, ev := range log.all() {
		if ev.Addr == addr {
			kinds = append(kinds, ev.Kind)
		}
	}
	t.Logf("events about %s: %v", addr, kinds)
	assert.True(t, inOrder(kinds, []picker.EventKind{picker.EventEjected, picker.EventProbe, picker.EventRestored}),
		"events about the member %v: want ejected, probe, restored in that order", kinds)
	for _, ev := range log.all() {
		if ev.Kind == picker.EventEjected && ev.Addr == addr {
			assert.Contains(t, []string{picker.ReasonFailures, picker.ReasonProbeFailed}, ev.Reason)
			assert.Positive(t, ev.Backoff)
		}
	}

	var msgs []string
	for _, e := range logs.FilterField(zap.String("member", addr)).All() {
		msgs = append(msgs, e.Message)
		if e.Message == "member ejected" {
			assert.Equal(t, zapcore.WarnLevel, e.Level)
			assert.Contains(t, e.ContextMap(), "backoff")
			assert.Contains(t, e.ContextMap(), "reason")
		}
	}
	t.Logf("log lines about %s: %q", addr, msgs)
	assert.True(t, inOrder(msgs, []string{"member ejected", "probing ejected member", "member restored"}),
		"log lines about the member %q: want ejected, probing, restored in that order", msgs)

	byReason := map[string]int{}
	for _, ev := range log.all() {
		if ev.Kind == picker.EventEjected && ev.Addr == addr {
			byReason[ev.Reason]++
		}
	}
	for _, r := range []string{picker.ReasonFailures, picker.ReasonProbeFailed} {
		assert.Equal(t, strconv.Itoa(byReason[r]), series(t, col, "etcdbalance_ejections_total", `member="`+addr+`",reason="`+r+`"`),
			"etcdbalance_ejections_total of the member, reason %s", r)
	}
	assert.Positive(t, byReason[picker.ReasonFailures]+byReason[picker.ReasonProbeFailed])
}

// TestLeaderChangeEvents: a leader change gives each client exactly one
// leader-changed event, naming the new leader, however many rounds the
// election takes to show.
func TestLeaderChangeEvents(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	var logs [2]eventLog
	var clis [2]*clientv3.Client
	for i := range clis {
		clis[i] = newBalanced(t, clientConfig(c.Endpoints()),
			etcdbalance.WithClusterView(100*time.Millisecond),
			etcdbalance.WithPickerConfig(picker.Config{Events: logs[i].add}))
	}
	li, err := c.WaitLeader(context.Background())
	require.NoError(t, err)
	old := c.Members()[li].ClientAddr()
	for i := range clis {
		waitFor(t, 30*time.Second, "the first leader event", func() bool {
			return logs[i].count(picker.EventLeaderChanged, old) == 1
		})
	}

	_, to := follower(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.MoveLeader(ctx, to))
	for i, cli := range clis {
		waitFor(t, 30*time.Second, "the view to find the new leader", func() bool {
			return viewOf(t, cli).Leader == to.ClientAddr()
		})
		// A few more rounds: none may report the leader again.
		waitRounds(t, cli, viewOf(t, cli).Rounds+3)
		var leaders []string
		for _, ev := range logs[i].all() {
			if ev.Kind == picker.EventLeaderChanged {
				leaders = append(leaders, ev.Addr)
			}
		}
		assert.Equal(t, []string{old, to.ClientAddr()}, leaders, "client %d: the first leader, then one event for the change", i)
	}
}

// TestAuthNoSecretsLogged: with auth on, nothing the client logs
// (clientv3's own lines included) and no label or value the
// collector exports contains the password or any token the members were
// sent, while members fail and are ejected.
func TestAuthNoSecretsLogged(t *testing.T) {
	var mu sync.Mutex
	tokens := map[string]bool{}
	capture := func(ctx context.Context) {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			mu.Lock()
			for _, tok := range md.Get("token") {
				tokens[tok] = true
			}
			mu.Unlock()
		}
	}
	hooks := newServerHooks()
	base := hooks.config(etcdcluster.Config{Size: 3})
	prev := base.Tweak
	base.Tweak = func(ec *embed.Config) {
		prev(ec)
		ec.GRPCAdditionalServerOptions = append(ec.GRPCAdditionalServerOptions,
			grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
				capture(ctx)
				return handler(ctx, req)
			}))
	}
	c, cfg := authCluster(t, base)
	core, logs := observer.New(zapcore.InfoLevel)
	cfg.Logger = zap.New(core)
	col := metrics.New()
	// Ejected at the first failure: a member that fails is soon avoided by
	// its cost, and five failures in a row would take a while.
	cli, err := etcdbalance.New(cfg, etcdbalance.WithPickerConfig(picker.Config{EjectAfter: 1, Events: col.Observe}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	exercise(t, "etcdbalance", cli)
	waitRounds(t, cli, 2)

	// A member that fails every Range: ejections, probes, log lines.
	_, bad := follower(t, c)
	hooks.setFault(bad.Name(), rpcRange, func(context.Context) error { return errUnavailable })
	ctx := context.Background()
	waitFor(t, 60*time.Second, "the failing member to be ejected", func() bool {
		hammer(ctx, 4, 40, gets(cli, "k", time.Second))
		return series(t, col, "etcdbalance_ejections_total", `member="`+bad.ClientAddr()+`",reason="failures"`) != "0"
	})
	hooks.setFault(bad.Name(), rpcRange, nil)

	mu.Lock()
	secrets := []string{rootPassword}
	for tok := range tokens {
		secrets = append(secrets, tok)
	}
	mu.Unlock()
	require.Greater(t, len(secrets), 1, "no token was captured: is auth on?")
	out := metricsText(t, col)
	require.NotEmpty(t, logs.All(), "nothing was logged")
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		for _, s := range secrets {
			assert.NotContains(t, line, s, "a log line holds a secret")
		}
	}
	for _, s := range secrets {
		assert.NotContains(t, out, s, "the metrics hold a secret")
	}
	t.Logf("%d log lines and %d bytes of metrics checked against the password and %d tokens", logs.Len(), len(out), len(secrets)-1)
}

var errUnavailable = status.Error(codes.Unavailable, "injected: member unavailable")

// metricsText is everything the collector exports, in the text format.
func metricsText(t *testing.T, col prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(col))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var b strings.Builder
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		require.NoError(t, enc.Encode(mf))
	}
	return b.String()
}

func toString(v any) string { return fmt.Sprint(v) }

// TestMetricsLint runs promlint over everything the collector of a real
// client exports, after a leader change, ejections and a guard re-issue
// have given every metric family a series.
func TestMetricsLint(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	col := metrics.New()
	cli := newBalanced(t, clientConfig(c.Endpoints()),
		etcdbalance.WithClusterView(100*time.Millisecond),
		etcdbalance.WithPickerConfig(picker.Config{Events: col.Observe}))
	exercise(t, "etcdbalance", cli)
	waitRounds(t, cli, 2)
	// Families that only events fill: fed as the adapters would.
	for _, ev := range []picker.Event{
		{Kind: picker.EventGuardReissue, Reason: picker.ReissueElsewhere},
		{Kind: picker.EventMarkedDown, Addr: c.Members()[0].ClientAddr()},
	} {
		col.Observe(ev)
	}

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(col))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{
		"etcdbalance_picks_total", "etcdbalance_requests_in_flight", "etcdbalance_open_streams",
		"etcdbalance_latency_estimate_seconds", "etcdbalance_ejections_total", "etcdbalance_leader",
		"etcdbalance_lag_entries", "etcdbalance_view_probe_rounds_total", "etcdbalance_view_probe_failures_total",
		"etcdbalance_guard_reissues_total", "etcdbalance_marks_total",
	} {
		assert.True(t, names[want], "no %s among %v", want, names)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")
	t.Logf("%d metric families, promlint clean", len(mfs))
}

// TestAttachLogs: a client built with DialOptions logs its events
// through its own logger once attached.
func TestAttachLogs(t *testing.T) {
	c := startCluster(t, etcdcluster.Config{Size: 3})
	cfg, logs := observed(c.Endpoints(), zapcore.InfoLevel)
	cli := newDialOptionsClient(t, cfg)
	stop, err := etcdbalance.Attach(cli)
	require.NoError(t, err)
	defer stop()
	li, err := c.WaitLeader(context.Background())
	require.NoError(t, err)
	waitFor(t, 30*time.Second, "the leader-changed log line", func() bool {
		return logs.FilterMessage("leader changed").FilterField(zap.String("leader", c.Members()[li].ClientAddr())).Len() == 1
	})
}
