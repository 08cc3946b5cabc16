package picker

import (
	"math"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBudget(t *testing.T) {
	for _, bad := range []float64{-0.1, 1.5, math.NaN(), math.Inf(1)} {
		_, err := NewBudget(bad)
		require.Error(t, err, "ratio %v", bad)
		require.Contains(t, err.Error(), "budget")
	}
	off, err := NewBudget(0)
	require.NoError(t, err)
	require.Nil(t, off)
	off.Earn()
	off.Refund()
	require.False(t, off.Spend(), "a nil budget lets nothing through")

	b, err := NewBudget(0.05)
	require.NoError(t, err)
	require.False(t, b.Spend(), "no token before any request")
	spent := 0
	for i := 0; i < 1000; i++ {
		b.Earn()
		if b.Spend() {
			spent++
		}
	}
	require.Equal(t, 50, spent, "5% of 1000 requests")

	// Saved tokens stop at the burst.
	for i := 0; i < 100000; i++ {
		b.Earn()
	}
	n := 0
	for b.Spend() {
		n++
	}
	require.Equal(t, budgetBurst, n)
	b.Refund()
	require.True(t, b.Spend())
	require.False(t, b.Spend())
}

// TestBudgetConcurrent: under concurrent use the copies never exceed the
// ratio of the requests plus the burst.
func TestBudgetConcurrent(t *testing.T) {
	b, err := NewBudget(0.1)
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		spent int
	)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := 0; i < 5000; i++ {
				b.Earn()
				if b.Spend() {
					n++
				}
			}
			mu.Lock()
			spent += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.LessOrEqual(t, spent, 40000/10+budgetBurst)
	require.GreaterOrEqual(t, spent, 40000/10-budgetBurst)
}
