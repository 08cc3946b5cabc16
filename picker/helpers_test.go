package picker

import (
	"math"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a manual clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1700000000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// chiSquareCritical approximates the χ² quantile 1-alpha for df degrees of
// freedom (Wilson–Hilferty); z is the normal quantile for alpha.
func chiSquareCritical(df int, z float64) float64 {
	k := float64(df)
	h := 2 / (9 * k)
	return k * math.Pow(1-h+z*math.Sqrt(h), 3)
}

// z for alpha = 1e-6, one-sided.
const z1e6 = 4.753424

func chiSquare(counts []int, expected float64) float64 {
	var x float64
	for _, c := range counts {
		d := float64(c) - expected
		x += d * d / expected
	}
	return x
}

func mustNew(t testing.TB, cfg Config, addrs ...string) *Picker {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetEndpoints(addrs); err != nil {
		t.Fatal(err)
	}
	return p
}

func statsOf(t testing.TB, p *Picker, addr string) EndpointStats {
	t.Helper()
	for _, s := range p.Snapshot() {
		if s.Addr == addr {
			return s
		}
	}
	t.Fatalf("no endpoint %q in snapshot", addr)
	return EndpointStats{}
}

var five = []string{"a", "b", "c", "d", "e"}
