// Package backoff computes the waits between retries of something that keeps failing: a sink
// write, a webhook delivery, a catch-up session with a peer. One rule for all of them:
// exponential from Min, capped at Max, optionally with jitter so that many nodes (or workers)
// do not retry in step.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is an exponential back-off.
type Policy struct {
	Min    time.Duration // wait after the first failure
	Max    time.Duration // longest wait
	Jitter bool          // "equal jitter": a random wait between half and all of the step
}

// Delay returns the wait after the n-th failure in a row (n ≥ 1): Min·2^(n-1), at most Max.
func (p Policy) Delay(n int) time.Duration {
	if p.Min <= 0 {
		return 0
	}
	maxD := max(p.Max, p.Min)
	d := maxD
	if shift := n - 1; shift < 62 {
		if shift < 0 {
			shift = 0
		}
		if s := p.Min << shift; s > 0 && s>>shift == p.Min {
			d = min(s, maxD)
		}
	}
	if p.Jitter {
		d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	}
	return d
}
