package etcdbalance

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestHedgeBudget(t *testing.T) {
	assert.Nil(t, newHedger(0), "no budget, no hedger")
	h := newHedger(0.05)
	require.NotNil(t, h)
	assert.False(t, h.spend(), "an empty bucket")
	for i := 0; i < 19; i++ {
		h.earned()
	}
	assert.False(t, h.spend(), "19 reads earn 0.95 of a token")
	h.earned()
	assert.True(t, h.spend(), "20 reads earn one")
	assert.False(t, h.spend())
	for i := 0; i < 10000; i++ {
		h.earned()
	}
	n := 0
	for h.spend() {
		n++
	}
	assert.Equal(t, hedgeBurst, n, "the bucket holds at most the burst")
}

// TestHedgeOptionValidation: a bad budget is an error naming it, from New
// and from dialling with DialOptions, as for the other options.
func TestHedgeOptionValidation(t *testing.T) {
	cfg := clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, Logger: zap.NewNop(), DialTimeout: time.Second}
	for _, c := range []struct {
		budget float64
		want   string
	}{{2, "budget 2 must be in (0, 1]"}, {-0.1, "budget -0.1 must"}, {math.NaN(), "budget NaN must"}, {math.Inf(1), "budget +Inf must"}} {
		before := reg.size()
		cli, err := New(cfg, WithHedgedReads(c.budget))
		if err == nil {
			cli.Close()
		}
		require.Error(t, err, "budget %v", c.budget)
		assert.True(t, strings.HasPrefix(err.Error(), "etcdbalance: ") && strings.Contains(err.Error(), c.want), "New: %v", err)

		dcfg := cfg
		dcfg.DialOptions = DialOptions(WithHedgedReads(c.budget))
		cli, err = clientv3.New(dcfg)
		if err == nil {
			cli.Close()
		}
		require.Error(t, err, "DialOptions, budget %v", c.budget)
		assert.Contains(t, err.Error(), c.want, "clientv3.New with DialOptions")
		assert.LessOrEqual(t, reg.size(), before, "registry grew on a rejected option")
	}
	for _, ok := range []float64{0, 0.05, 1} {
		assert.NoError(t, checkHedge(ok), "budget %v", ok)
	}
}
