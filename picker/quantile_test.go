package picker

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBucketOf(t *testing.T) {
	assert.Equal(t, 0, bucketOf(0))
	assert.Equal(t, 0, bucketOf(-5))
	assert.Equal(t, 0, bucketOf(histMin-1))
	for i := 0; i < histBuckets; i++ {
		lo := int64(math.Ceil(bucketLow(i)))
		assert.Equal(t, i, bucketOf(lo), "lower bound of bucket %d (%v)", i, time.Duration(lo))
		if i > 0 {
			assert.Equal(t, i-1, bucketOf(lo-1), "just below bucket %d", i)
		}
	}
	assert.Equal(t, histBuckets-1, bucketOf(int64(time.Hour)))
	// Four buckets per doubling: 1 ms and 2 ms are four apart.
	assert.Equal(t, 4, bucketOf(int64(2*time.Millisecond))-bucketOf(int64(time.Millisecond)))
}

// feedOK hands back OK tickets of the given latencies to a one-endpoint
// picker.
func feedOK(t *testing.T, p *Picker, lat ...time.Duration) {
	t.Helper()
	for _, d := range lat {
		tk, err := p.Pick(Request{})
		require.NoError(t, err)
		p.Done(tk, Outcome{Latency: d})
	}
}

func TestQuantile(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk}, "a")
	tk, err := p.Pick(Request{})
	require.NoError(t, err)
	defer p.Done(tk, Outcome{Result: Canceled})

	_, ok := p.Quantile(tk, 0.95)
	assert.False(t, ok, "no samples yet")
	_, ok = p.Quantile(Ticket{}, 0.95)
	assert.False(t, ok, "zero ticket")

	// 100 samples: 1..100 ms. p95 is in the bucket holding 95 ms, within
	// its width (19%) of 95 ms.
	for i := 1; i <= 100; i++ {
		feedOK(t, p, time.Duration(i)*time.Millisecond)
	}
	q95, ok := p.Quantile(tk, 0.95)
	require.True(t, ok)
	assert.InEpsilon(t, float64(95*time.Millisecond), float64(q95), 0.19, "p95 %v", q95)
	q50, _ := p.Quantile(tk, 0.5)
	assert.InEpsilon(t, float64(50*time.Millisecond), float64(q50), 0.19, "p50 %v", q50)
	q100, _ := p.Quantile(tk, 1)
	assert.InEpsilon(t, float64(100*time.Millisecond), float64(q100), 0.19, "p100 %v", q100)
	assert.True(t, q50 < q95 && q95 <= q100, "monotonic in q: %v %v %v", q50, q95, q100)
	for _, q := range []float64{0, -1, 1.5, math.NaN()} {
		_, ok := p.Quantile(tk, q)
		assert.False(t, ok, "q = %v", q)
	}

	// Failures, deadlines and cancels are not latencies of answers.
	for i := 0; i < 50; i++ {
		tk2, _ := p.Pick(Request{})
		p.Done(tk2, Outcome{Result: DeadlineExceeded, Timeout: time.Second})
	}
	again, _ := p.Quantile(tk, 0.95)
	assert.Equal(t, q95, again)

	// Classes are kept apart.
	rt, err := p.Pick(Request{Class: ClassRange})
	require.NoError(t, err)
	_, ok = p.Quantile(rt, 0.95)
	assert.False(t, ok, "no range samples")
	p.Done(rt, Outcome{Result: Canceled})

	// Samples age out: after one window the old ones still count, after
	// two they are gone, and new ones take over.
	clk.Advance(time.Duration(histWindow))
	_, ok = p.Quantile(tk, 0.95)
	assert.True(t, ok, "one window later")
	clk.Advance(time.Duration(histWindow))
	_, ok = p.Quantile(tk, 0.95)
	assert.False(t, ok, "two windows later")
	for i := 0; i < 20; i++ {
		feedOK(t, p, 2*time.Millisecond)
	}
	q, ok := p.Quantile(tk, 0.95)
	require.True(t, ok)
	assert.InEpsilon(t, float64(2*time.Millisecond), float64(q), 0.19, "p95 of fresh samples %v", q)
}

// TestQuantileConcurrent adds and reads from several goroutines (for the
// race detector) across window turns.
func TestQuantileConcurrent(t *testing.T) {
	clk := newFakeClock()
	p := mustNew(t, Config{Clock: clk}, "a")
	tk, err := p.Pick(Request{})
	require.NoError(t, err)
	defer p.Done(tk, Outcome{Result: Canceled})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				t2, err := p.Pick(Request{})
				if err != nil {
					t.Error(err)
					return
				}
				p.Done(t2, Outcome{Latency: 3 * time.Millisecond})
				if i%100 == 0 {
					clk.Advance(time.Second)
				}
				p.Quantile(tk, 0.95)
			}
		}()
	}
	wg.Wait()
	q, ok := p.Quantile(tk, 0.95)
	require.True(t, ok)
	assert.InEpsilon(t, float64(3*time.Millisecond), float64(q), 0.19)
}

// BenchmarkQuantile reads a p95 from a histogram of 1000 samples spread
// over two decades.
func BenchmarkQuantile(b *testing.B) {
	p := mustNew(b, Config{}, "a")
	tk, err := p.Pick(Request{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Done(tk, Outcome{Result: Canceled})
	for i := 0; i < 1000; i++ {
		t2, _ := p.Pick(Request{})
		p.Done(t2, Outcome{Latency: time.Duration(1+i%100) * time.Millisecond})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := p.Quantile(tk, 0.95); !ok {
			b.Fatal("no quantile")
		}
	}
}
