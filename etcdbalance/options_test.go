package etcdbalance

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// TestOptionValidation: New reports a bad engine configuration before
// dialling, and a client built with DialOptions fails to dial with the
// same description; neither leaves anything registered.
func TestOptionValidation(t *testing.T) {
	cases := []struct {
		name string
		pc   picker.Config
		want string
	}{
		{"policy", picker.Config{Policy: "random"}, `unknown policy "random"`},
		{"decay", picker.Config{Decay: -time.Second}, "Decay -1s must be positive"},
		{"default rtt", picker.Config{DefaultRTT: -time.Millisecond}, "DefaultRTT -1ms must be positive"},
		{"slow start penalty", picker.Config{SlowStartPenalty: 0.5}, "SlowStartPenalty 0.5"},
		{"eject max", picker.Config{EjectAfter: 3, EjectBase: 10 * time.Second, EjectMax: time.Second}, "EjectMax 1s is shorter than EjectBase 10s"},
		{"reserve NaN", picker.Config{ReserveRatio: math.NaN()}, "NaN"},
		{"reserve small", picker.Config{ReserveRatio: 0.5}, "ReserveRatio 0.5"},
		{"eject base", picker.Config{EjectBase: -time.Second}, "EjectBase -1s must be positive"},
	}
	// Nothing listens here: a valid configuration would dial lazily and
	// fail only on the first call; an invalid one must fail at once.
	cfg := clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, Logger: zap.NewNop(), DialTimeout: time.Second}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := reg.size()
			cli, err := New(cfg, WithPickerConfig(c.pc))
			if err == nil {
				cli.Close()
				t.Fatalf("New accepted %+v; want an error containing %q", c.pc, c.want)
			}
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), "etcdbalance: invalid configuration: ")

			dcfg := cfg
			dcfg.DialOptions = DialOptions(WithPickerConfig(c.pc))
			cli, err = clientv3.New(dcfg)
			if err == nil {
				cli.Close()
				t.Fatalf("clientv3.New with DialOptions accepted %+v; want an error containing %q", c.pc, c.want)
			}
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), "etcdbalance: invalid configuration: ")
			assert.LessOrEqual(t, reg.size(), before, "registry grew on a rejected configuration")
		})
	}
}

// TestOptionsReachEngine: WithPickerConfig reaches the registered entry
// whole, the last one given wins, and the routing options stay apart.
func TestOptionsReachEngine(t *testing.T) {
	o := applyOptions([]Option{
		WithPickerConfig(picker.Config{Policy: picker.Pinned}),
		WithPickerConfig(picker.Config{Policy: picker.LeastOutstanding, ReserveRatio: 4}),
		WithLeaderWrites(false),
	})
	assert.Equal(t, picker.Config{Policy: picker.LeastOutstanding, ReserveRatio: 4}, o.picker)
	assert.False(t, o.routing.leaderWrites)
	assert.True(t, o.routing.followerReads, "routing defaults kept")
	e, err := reg.create(o.picker, o.routing)
	require.NoError(t, err)
	defer reg.release(e)
	assert.Equal(t, o.picker, e.cfg)
}

// TestRoutingOptions: 0 keeps a routing default, a negative value switches
// the feature off, any other value is taken.
func TestRoutingOptions(t *testing.T) {
	def := applyOptions(nil).routing
	assert.Equal(t, defaultRouting(), def)
	assert.Equal(t, time.Second, def.viewInterval)
	assert.Equal(t, uint64(1000), def.lagThreshold)

	for _, c := range []struct {
		opts     []Option
		interval time.Duration
		lag      uint64
	}{
		{[]Option{WithClusterView(0), WithLagThreshold(0)}, DefaultViewInterval, DefaultLagThreshold},
		{[]Option{WithClusterView(-1), WithLagThreshold(-5)}, 0, 0},
		{[]Option{WithClusterView(250 * time.Millisecond), WithLagThreshold(50)}, 250 * time.Millisecond, 50},
	} {
		got := applyOptions(c.opts).routing
		assert.Equal(t, c.interval, got.viewInterval)
		assert.Equal(t, c.lag, got.lagThreshold)
	}
	off := applyOptions([]Option{WithLeaderWrites(false), WithFollowerReads(false), WithLearnerReads(false), WithMonotonicReads(false), nil}).routing
	assert.Equal(t, routing{viewInterval: DefaultViewInterval, lagThreshold: DefaultLagThreshold}, off)
}
