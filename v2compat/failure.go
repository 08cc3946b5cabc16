package v2compat

import (
	"sync/atomic"

	"github.com/etcdbalance/etcdbalance-go/picker"
)

// judge updates the "just failed" mark of ep after an answer or a failure
// with result r. ep.failed spares the answers of a healthy member the
// call into the picker; an answer racing with a failure may leave the
// mark on until it is due. A member the picker no longer has needs none.
func (t *Transport) judge(ep *endpoint, r picker.Result) {
	switch r {
	case picker.OK:
		if atomic.LoadInt32(&ep.failed) != 0 {
			atomic.StoreInt32(&ep.failed, 0)
			_ = t.p.Mark(ep.key, tagFailed, 0)
		}
	case picker.Failed, picker.DeadlineExceeded:
		atomic.StoreInt32(&ep.failed, 1)
		_ = t.p.Mark(ep.key, tagFailed, failedHold)
	}
}

// afterFailure asks for an early leader lookup when a write or anything
// sent to the leader failed: the leader may have changed.
func (t *Transport) afterFailure(c *call, ep *endpoint, r picker.Result) {
	if r != picker.Failed && r != picker.DeadlineExceeded {
		return
	}
	if c.class == classWrite || ep.key == t.leaderV.Load().(string) {
		t.kickPoll()
	}
}
