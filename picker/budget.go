package picker

import (
	"fmt"
	"math"
	"sync/atomic"
)

// budgetBurst is how many whole tokens a Budget saves up: enough for a
// burst of extra requests after a quiet spell, too few to feed an overload.
const budgetBurst = 10

// budgetUnit is one token in a Budget's fixed-point count.
const budgetUnit = 1 << 20

// Budget is a token bucket for optional extra requests, such as the second
// copy of a hedged read ("The Tail at Scale", Dean and Barroso): every
// request earns ratio of a token, up to 10 saved, and every extra request
// spends a whole one, so extra requests never exceed ratio of the requests
// plus the 10 saved. Both adapters' hedged reads (etcdbalance and v2compat
// WithHedgedReads) use it. Safe for concurrent use; allocates nothing. The
// methods of a nil *Budget do nothing, and Spend reports false.
type Budget struct {
	tokens int64 // atomic; first, for its alignment on 32-bit platforms
	earn   int64 // budgetUnit × ratio
}

// NewBudget returns a budget of ratio extra requests per request. ratio
// must be in [0, 1]; 0 gives a nil *Budget, which never lets one through.
func NewBudget(ratio float64) (*Budget, error) {
	if !(ratio >= 0 && ratio <= 1) {
		return nil, fmt.Errorf("picker: budget %v must be in [0, 1]", ratio)
	}
	if ratio == 0 {
		return nil, nil
	}
	return &Budget{earn: int64(math.Ceil(ratio * budgetUnit))}, nil
}

// Earn adds one request's share of a token.
func (b *Budget) Earn() {
	if b != nil {
		b.add(b.earn)
	}
}

// Spend takes a whole token for an extra request, if there is one.
func (b *Budget) Spend() bool {
	if b == nil {
		return false
	}
	for {
		v := atomic.LoadInt64(&b.tokens)
		if v < budgetUnit {
			return false
		}
		if atomic.CompareAndSwapInt64(&b.tokens, v, v-budgetUnit) {
			return true
		}
	}
}

// Refund gives back a token spent on an extra request that was not sent.
func (b *Budget) Refund() {
	if b != nil {
		b.add(budgetUnit)
	}
}

// add raises the count by d, up to the burst.
func (b *Budget) add(d int64) {
	for {
		v := atomic.LoadInt64(&b.tokens)
		n := v + d
		if n > budgetBurst*budgetUnit {
			n = budgetBurst * budgetUnit
		}
		if n == v || atomic.CompareAndSwapInt64(&b.tokens, v, n) {
			return
		}
	}
}
